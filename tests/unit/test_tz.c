/*
 * Unit tests for tz.c: offsets and transitions of real zones (known values,
 * and a differential check against glibc's localtime_r over 1906–2103 —
 * past 2037 the TZif footer rule is what answers), local -> UTC across DST
 * gaps and overlaps, and names that must not reach the file system.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "journeyd/tz.h"

#define H 3600LL

/* seconds since the epoch of a UTC date-time */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm);
}

static void test_known_offsets(void **state)
{
    (void)state;
    struct jd_tzdb *db = jd_tzdb_new(NULL);
    const struct jd_tz *paris = jd_tzdb_get(db, "Europe/Paris");
    const struct jd_tz *ny = jd_tzdb_get(db, "America/New_York");
    const struct jd_tz *u = jd_tzdb_get(db, "UTC");
    assert_non_null(paris);
    assert_non_null(ny);
    assert_non_null(u);
    assert_string_equal(jd_tz_name(paris), "Europe/Paris");
    /* a second look-up is the cached zone */
    assert_ptr_equal(jd_tzdb_get(db, "Europe/Paris"), paris);

    assert_int_equal(jd_tz_offset(paris, utc(2024, 1, 15, 12, 0)), 3600);
    assert_int_equal(jd_tz_offset(paris, utc(2024, 7, 15, 12, 0)), 7200);
    /* 2024-03-31 01:00Z: CET -> CEST, exactly at the instant */
    assert_int_equal(jd_tz_offset(paris, utc(2024, 3, 31, 1, 0) - 1), 3600);
    assert_int_equal(jd_tz_offset(paris, utc(2024, 3, 31, 1, 0)), 7200);
    assert_int_equal(jd_tz_next_transition(paris, utc(2024, 3, 1, 0, 0)), utc(2024, 3, 31, 1, 0));
    assert_int_equal(jd_tz_next_transition(paris, utc(2024, 3, 31, 1, 0)), utc(2024, 10, 27, 1, 0));
    /* 2024-11-03 06:00Z: EDT -> EST */
    assert_int_equal(jd_tz_offset(ny, utc(2024, 11, 3, 6, 0) - 1), -4 * 3600);
    assert_int_equal(jd_tz_offset(ny, utc(2024, 11, 3, 6, 0)), -5 * 3600);
    /* beyond the table of a fat file (2037): the footer rule */
    assert_int_equal(jd_tz_offset(paris, utc(2050, 7, 1, 0, 0)), 7200);
    assert_int_equal(jd_tz_offset(paris, utc(2050, 12, 1, 0, 0)), 3600);
    assert_int_equal(jd_tz_next_transition(paris, utc(2050, 1, 1, 0, 0)), utc(2050, 3, 27, 1, 0));
    assert_int_equal(jd_tz_offset(u, utc(2024, 7, 1, 0, 0)), 0);
    assert_true(jd_tz_next_transition(u, utc(2024, 7, 1, 0, 0)) == INT64_MAX);
    jd_tzdb_destroy(db);
}

/* Every 7 hours and 7 seconds from 1906 to 2103 in zones of both
 * hemispheres, with negative DST (Dublin), half-hour and 45-minute offsets
 * (Kolkata, Chatham), and a zone without DST now (Sao Paulo). glibc reads
 * the same files: any disagreement is a parsing bug here. */
static void test_against_glibc(void **state)
{
    (void)state;
    static const char *const zones[] = {
        "Europe/Paris",    "America/New_York",  "Australia/Sydney",
        "Asia/Kolkata",    "America/Santiago",  "Europe/Dublin",
        "Pacific/Chatham", "America/Sao_Paulo", "Africa/Casablanca"};
    struct jd_tzdb *db = jd_tzdb_new(NULL);
    char *saved = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    long mismatches = 0, checked = 0;
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        const struct jd_tz *z = jd_tzdb_get(db, zones[i]);
        assert_non_null(z);
        setenv("TZ", zones[i], 1); /* only here, single-threaded, to ask glibc */
        tzset();
        for (int64_t t = -2000000000LL; t < 4200000000LL; t += 7 * 3600 + 7) {
            struct tm tm;
            time_t tt = (time_t)t;
            localtime_r(&tt, &tm);
            checked++;
            if (tm.tm_gmtoff != jd_tz_offset(z, t) && mismatches++ < 5)
                print_error("%s at %lld: glibc %ld, ours %d\n", zones[i], (long long)t,
                            tm.tm_gmtoff, jd_tz_offset(z, t));
        }
    }
    if (saved) {
        setenv("TZ", saved, 1);
        free(saved);
    } else {
        unsetenv("TZ");
    }
    tzset();
    assert_true(checked > 2000000);
    assert_int_equal(mismatches, 0);
    jd_tzdb_destroy(db);
}

static void test_local_to_utc(void **state)
{
    (void)state;
    struct jd_tzdb *db = jd_tzdb_new(NULL);
    const struct jd_tz *ny = jd_tzdb_get(db, "America/New_York");
    int64_t day_ms = 86400000LL;
    /* local 2024-03-10 08:00 (EDT) is 12:00Z, reached from 04:00Z (23:00 EST) */
    int64_t local = (utc(2024, 3, 10, 0, 0) * 1000) + 8 * H * 1000;
    assert_int_equal(jd_tz_local_to_utc_ms(ny, utc(2024, 3, 10, 4, 0) * 1000, local),
                     utc(2024, 3, 10, 12, 0) * 1000);
    /* 02:30 does not exist that day: the clock passes it at 07:00Z (03:00 EDT) */
    local = utc(2024, 3, 10, 2, 30) * 1000;
    assert_int_equal(jd_tz_local_to_utc_ms(ny, utc(2024, 3, 10, 4, 0) * 1000, local),
                     utc(2024, 3, 10, 7, 0) * 1000);
    /* 01:30 on 2024-11-03 happens twice: the first one, 05:30Z (EDT) */
    local = utc(2024, 11, 3, 1, 30) * 1000;
    assert_int_equal(jd_tz_local_to_utc_ms(ny, utc(2024, 11, 3, 2, 0) * 1000, local),
                     utc(2024, 11, 3, 5, 30) * 1000);
    /* from after the first occurrence: the second one, 06:30Z (EST) */
    assert_int_equal(jd_tz_local_to_utc_ms(ny, utc(2024, 11, 3, 6, 0) * 1000, local),
                     utc(2024, 11, 3, 6, 30) * 1000);
    /* a time already passed is reached at once */
    assert_int_equal(jd_tz_local_to_utc_ms(ny, utc(2024, 11, 4, 0, 0) * 1000, local - day_ms),
                     utc(2024, 11, 4, 0, 0) * 1000);
    jd_tzdb_destroy(db);
}

static void test_bad_names(void **state)
{
    (void)state;
    struct jd_tzdb *db = jd_tzdb_new(NULL);
    static const char *const bad[] = {"",
                                      "/etc/passwd",
                                      "../../../etc/passwd",
                                      "Europe/../../etc/passwd",
                                      "Europe//Paris",
                                      "Europe/Paris/",
                                      "Mars/Olympus_Mons",
                                      "Europe",   /* a directory */
                                      "zone.tab", /* a file, not TZif ('.' is refused anyway) */
                                      "tzdata.zi",
                                      "Europe/Paris\n",
                                      "a very long name that is certainly not a zone at all, no"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(jd_tzdb_get(db, bad[i]));
    assert_null(jd_tzdb_get(db, NULL));
    /* a directory of TZif files elsewhere is fine */
    jd_tzdb_destroy(db);
    db = jd_tzdb_new("/usr/share/zoneinfo/Europe");
    assert_non_null(jd_tzdb_get(db, "Paris"));
    jd_tzdb_destroy(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_offsets),
        cmocka_unit_test(test_against_glibc),
        cmocka_unit_test(test_local_to_utc),
        cmocka_unit_test(test_bad_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
