/*
 * Runs a cmocka group with this thread's customer memory taken from a pool,
 * as an engine's is (cmem.h), and fails it when any of that memory is left
 * allocated at the end: a customer's part that its destroy forgot
 * (LeakSanitizer does not see into the pool's mappings; an
 * AddressSanitizer build aborts there instead).
 */
#ifndef JD_TEST_CMEM_POOL_H
#define JD_TEST_CMEM_POOL_H

#include <stdio.h>

#include "journeyd/cmem.h"

#define jd_run_tests_in_pool(tests, setup, teardown)                                               \
    ({                                                                                             \
        struct jd_cmem *pool_ = jd_cmem_new();                                                     \
        jd_cmem_use(pool_);                                                                        \
        int rc_ = cmocka_run_group_tests(tests, setup, teardown);                                  \
        size_t live_ = jd_cmem_destroy(pool_);                                                     \
        if (live_) {                                                                               \
            fprintf(stderr, "%zu bytes of customer memory were left allocated\n", live_);          \
            rc_ = 1;                                                                               \
        }                                                                                          \
        rc_;                                                                                       \
    })

#endif
