/*
 * JD_TEST_ASAN is defined in an AddressSanitizer build (GCC's
 * __SANITIZE_ADDRESS__, clang's __has_feature), for the unit tests whose
 * expectations differ there.
 */
#ifndef JD_TEST_ASAN_BUILD_H
#define JD_TEST_ASAN_BUILD_H

#if defined(__SANITIZE_ADDRESS__)
#define JD_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JD_TEST_ASAN 1
#endif
#endif

#endif
