/*
 * Unit tests for the customer state (state.c) and its stored form
 * (state_codec.c): core updates, duplicate guard, outbox, encode/decode
 * round trips with escaping, corrupt values, and re-shaping for a new rule
 * set compiled by the real rule compiler.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmem_pool.h"

#include "journeyd/rules.h"
#include "journeyd/state.h"

static struct jd_event mkev(const char *id, const char *type, const char *channel, int64_t at)
{
    struct jd_event ev;
    memset(&ev, 0, sizeof ev);
    ev.event_id = id;
    ev.customer_id = "c1";
    ev.type = type;
    ev.channel = channel;
    ev.occurred_at = at;
    return ev;
}

static void test_apply_core(void **unused)
{
    struct jd_customer *c = jd_customer_new("c1", 2, 3, NULL);
    assert_int_equal(c->applied_offset, -1);
    assert_int_equal(c->last_score, -1);
    assert_int_equal(c->stage, -1);
    assert_int_equal(c->naggs, 0);

    struct jd_event ev = mkev("e1", "purchase", "web", 2000);
    ev.has_amount = 1;
    ev.amount = 19.5;
    jd_customer_apply_core(c, &ev);
    assert_true(c->dirty);
    /* older event: first_seen moves back, last_seen and channel stay */
    ev = mkev("e2", "page_view", "app", 1000);
    jd_customer_apply_core(c, &ev);
    ev = mkev("e3", "refund", "store", 3000);
    ev.has_amount = 1;
    ev.amount = 4.25;
    jd_customer_apply_core(c, &ev);
    ev = mkev("e4", "feedback", "email", 2500);
    ev.has_score = 1;
    ev.score = 3;
    jd_customer_apply_core(c, &ev);
    /* an amount on another type is not spend; a score on another type is not feedback */
    ev = mkev("e5", "page_view", "web", 2600);
    ev.has_amount = 1;
    ev.amount = 1000;
    ev.has_score = 1;
    ev.score = 9;
    jd_customer_apply_core(c, &ev);

    assert_int_equal(c->first_seen, 1000);
    assert_int_equal(c->last_seen, 3000);
    assert_string_equal(c->last_channel, "store");
    assert_int_equal(jd_customer_count(c, "purchase"), 1);
    assert_int_equal(jd_customer_count(c, "page_view"), 2);
    assert_int_equal(jd_customer_count(c, "refund"), 1);
    assert_int_equal(jd_customer_count(c, "signup"), 0);
    assert_true(c->spend == 19.5 - 4.25);
    assert_int_equal(c->last_score, 3);

    /* a user-defined type and channel are copied, not borrowed */
    char type[16], chan[16];
    strcpy(type, "loyalty_quiz");
    strcpy(chan, "kiosk");
    ev = mkev("e6", type, chan, 4000);
    jd_customer_apply_core(c, &ev);
    strcpy(type, "xxxxxxxxxxxx");
    strcpy(chan, "xxxxx");
    assert_int_equal(jd_customer_count(c, "loyalty_quiz"), 1);
    assert_string_equal(c->last_channel, "kiosk");
    jd_customer_destroy(c);
}

/* Well-known and user-defined types mixed: the entries keep their order, the
 * user-defined names (kept after the entries) follow as entries are added,
 * and a decode/encode round trip gives the same text. */
static void test_counts_mixed(void **unused)
{
    struct jd_customer *c = jd_customer_new("c1", 2, 0, NULL);
    static const char *const types[] = {"quiz_a", "purchase", "quiz_b", "page_view", "quiz_c",
                                        "quiz_a", "refund",   "quiz_b", "quiz_d"};
    char id[16];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        snprintf(id, sizeof id, "e%zu", i);
        struct jd_event ev = mkev(id, types[i], "web", 1000 + (int64_t)i);
        jd_customer_apply_core(c, &ev);
    }
    static const char *const order[] = {"quiz_a", "purchase", "quiz_b", "page_view",
                                        "quiz_c", "refund",   "quiz_d"};
    static const int64_t n[] = {2, 1, 2, 1, 1, 1, 1};
    assert_int_equal(c->ncounts, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(jd_customer_count_type(c, i), order[i]);
        assert_int_equal(jd_customer_count_n(c, i), n[i]);
        assert_int_equal(jd_customer_count(c, order[i]), n[i]);
    }
    struct jd_buf a, b;
    jd_buf_init(&a);
    jd_buf_init(&b);
    jd_customer_encode(c, NULL, &a);
    jd_buf_append(&a, "", 1);
    assert_string_equal(a.data, "v1|fs=1000|ls=1008|ch=web|c.quiz_a=2|c.purchase=1|c.quiz_b=2|"
                                "c.page_view=1|c.quiz_c=1|c.refund=1|c.quiz_d=1");
    char err[128];
    struct jd_customer *d = jd_customer_new("c1", 2, 0, NULL);
    assert_int_equal(jd_customer_decode(d, NULL, a.data, a.len - 1, err, sizeof err), 0);
    jd_customer_encode(d, NULL, &b);
    jd_buf_append(&b, "", 1);
    assert_string_equal(a.data, b.data);
    /* the largest count kept loads and stays */
    const char *big = "v1|c.quiz_z=1099511627775|c.signup=3";
    assert_int_equal(jd_customer_decode(d, NULL, big, strlen(big), err, sizeof err), 0);
    assert_int_equal(jd_customer_count(d, "quiz_z"), JD_COUNT_MAX);
    assert_int_equal(jd_customer_count(d, "signup"), 3);
    jd_buf_free(&a);
    jd_buf_free(&b);
    jd_customer_destroy(c);
    jd_customer_destroy(d);
}

/* Well-known names have one shared copy each (jd_state_known): a count or a
 * channel reached through that copy, through a string literal or through a
 * heap copy is the same; two different known copies are never equal, and
 * other names compare by content. */
static void test_known_names(void **unused)
{
    (void)unused;
    static const char *const known[] = {"page_view",
                                        "product_view",
                                        "add_to_cart",
                                        "checkout_started",
                                        "purchase",
                                        "refund",
                                        "app_open",
                                        "email_open",
                                        "email_click",
                                        "push_open",
                                        "support_contact",
                                        "feedback",
                                        "reward_redeemed",
                                        "signup",
                                        "web",
                                        "app",
                                        "email",
                                        "store",
                                        "call_center",
                                        "social",
                                        "sms",
                                        "push"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        char copy[32];
        snprintf(copy, sizeof copy, "%s", known[i]);
        const char *k = jd_state_known(copy);
        assert_non_null(k);
        assert_true(jd_state_is_known(k));
        assert_false(jd_state_is_known(copy));
        assert_string_equal(k, known[i]);
        assert_ptr_equal(jd_state_known(k), k);
        assert_true(jd_name_eq(k, copy));
        assert_true(jd_name_eq(copy, k));
        for (size_t j = 0; j < sizeof known / sizeof known[0]; j++)
            assert_int_equal(jd_name_eq(k, jd_state_known(known[j])), i == j);
    }
    assert_null(jd_state_known("quiz"));
    assert_null(jd_state_known(""));
    assert_null(jd_state_known("purchas"));
    assert_null(jd_state_known("purchase_x"));
    assert_null(jd_state_known(NULL));
    assert_true(jd_name_eq("quiz", "quiz"));
    assert_false(jd_name_eq("quiz", "quiz_a"));
    assert_false(jd_name_eq(jd_state_known("push"), "push_open"));

    /* counts: the known copy, a heap copy and a literal find one entry */
    struct jd_customer *c = jd_customer_new("c1", 2, 0, NULL);
    char *heap = strdup("purchase");
    struct jd_event ev = mkev("e1", jd_state_known("purchase"), jd_state_known("web"), 1000);
    ev.has_amount = 1;
    ev.amount = 10;
    jd_customer_apply_core(c, &ev);
    ev = mkev("e2", heap, "web", 1001);
    ev.has_amount = 1;
    ev.amount = 5;
    jd_customer_apply_core(c, &ev);
    ev = mkev("e3", "quiz", jd_state_known("app"), 1002);
    jd_customer_apply_core(c, &ev);
    assert_int_equal(c->ncounts, 2);
    assert_int_equal(jd_customer_count(c, "purchase"), 2);
    assert_int_equal(jd_customer_count(c, heap), 2);
    assert_int_equal(jd_customer_count(c, jd_state_known("purchase")), 2);
    assert_int_equal(jd_customer_count(c, jd_state_known("page_view")), 0);
    assert_int_equal(jd_customer_count(c, "quiz"), 1);
    assert_true(c->spend == 15);
    assert_string_equal(c->last_channel, "app");
    assert_ptr_equal(c->last_channel, jd_state_known("app"));
    free(heap);
    jd_customer_destroy(c);
}

/* Customers of one zone share its name; a change or a clear lets go of it;
 * past the pool's size names are each customer's own copies (ASan checks
 * that those are freed). Runs last: it fills the process-wide pool. */
static void test_tz_pool(void **unused)
{
    struct jd_customer *a = jd_customer_new("a", 1, 0, NULL);
    struct jd_customer *b = jd_customer_new("b", 1, 0, NULL);
    jd_customer_set_tz(a, "Europe/Paris", 12);
    jd_customer_set_tz(b, "Europe/Paris!", 12); /* len bounds the name */
    assert_string_equal(a->tz, "Europe/Paris");
    assert_ptr_equal(a->tz, b->tz);
    jd_customer_set_tz(b, "Asia/Tokyo", 10);
    assert_string_equal(b->tz, "Asia/Tokyo");
    assert_string_equal(a->tz, "Europe/Paris");
    jd_customer_set_tz(b, NULL, 0);
    assert_null(b->tz);

    /* fill the pool: the names keep reading back, pooled or not */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(name, sizeof name, "Zone/Number_%d", i);
        jd_customer_set_tz(b, name, (size_t)n);
        assert_string_equal(b->tz, name);
    }
    jd_customer_set_tz(a, name, strlen(name));
    assert_string_equal(a->tz, name);
    assert_ptr_not_equal(a->tz, b->tz); /* own copies */
    /* a pooled name is still shared, and a decoded one joins it */
    const char *v = "v1|tz=Europe/Paris";
    char err[128];
    assert_int_equal(jd_customer_decode(b, NULL, v, strlen(v), err, sizeof err), 0);
    jd_customer_set_tz(a, "Europe/Paris", 12);
    assert_ptr_equal(a->tz, b->tz);
    jd_customer_set_tz(a, name, strlen(name));
    jd_customer_destroy(a);
    jd_customer_destroy(b);
}

static void test_seen_event(void **unused)
{
    struct jd_customer *c = jd_customer_new("c1", 2, 0, NULL);
    char id[32];
    for (int i = 0; i < JD_RECENT_IDS; i++) {
        snprintf(id, sizeof id, "ev-%d", i);
        assert_int_equal(jd_customer_seen_event(c, id), 0);
    }
    for (int i = 0; i < JD_RECENT_IDS; i++) {
        snprintf(id, sizeof id, "ev-%d", i);
        assert_int_equal(jd_customer_seen_event(c, id), 1);
    }
    /* one more pushes the oldest out */
    assert_int_equal(jd_customer_seen_event(c, "ev-new"), 0);
    assert_int_equal(jd_customer_seen_event(c, "ev-0"), 0);
    assert_int_equal(jd_customer_seen_event(c, "ev-new"), 1);
    jd_customer_destroy(c);
}

static struct jd_pending_trigger *add(struct jd_customer *c, const char *id, const char *hist)
{
    struct jd_pending_trigger *p = jd_customer_add_pending(c);
    snprintf(p->trigger_id, sizeof p->trigger_id, "%s", id);
    p->kind = 1;
    jd_pending_set_value(p, "\0abc", 4);
    p->history = hist ? strdup(hist) : NULL;
    return p;
}

static void test_outbox(void **unused)
{
    struct jd_customer *c = jd_customer_new("c1", 2, 0, NULL);
    add(c, "t1", "h1");
    /* the outbox array is sized 1, 2, 4, ...: one trigger in flight (tens of
     * thousands of customers at once under load) takes one small slot */
    assert_true(jd_cmem_size(c->pending) <= 96);
    add(c, "t2", NULL)->stored = 1;
    assert_true(jd_cmem_size(c->pending) <= 192);
    assert_string_equal(c->pending[0].trigger_id, "t1");
    add(c, "t3", "h3")->stored = 1;
    add(c, "t4", NULL);
    assert_int_equal(c->npending, 4);
    assert_non_null(jd_customer_find_pending(c, "t3"));

    /* never stored: nothing to delete in Redis, but its history line survives */
    assert_int_equal(jd_customer_ack(c, "t1"), 0);
    assert_int_equal(c->nacked, 0);
    assert_int_equal(c->nhistory, 1);
    assert_string_equal(c->history[0], "h1");
    assert_int_equal(jd_customer_ack(c, "t3"), 0);
    assert_int_equal(c->nacked, 1);
    assert_string_equal(c->acked[0], "t3");
    assert_int_equal(c->nhistory, 2);
    assert_int_equal(jd_customer_ack(c, "t3"), -1);
    assert_int_equal(jd_customer_ack(c, "nope"), -1);

    assert_int_equal(c->npending, 2);
    assert_string_equal(c->pending[0].trigger_id, "t2");
    assert_string_equal(c->pending[1].trigger_id, "t4");
    assert_int_equal(c->pending[1].value.len, 4);
    jd_customer_clear_acked(c);
    assert_int_equal(c->nacked, 0);
    /* growth after removals */
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "x%d", i);
        add(c, id, "h")->stored = 1;
    }
    for (int i = 0; i < 20; i += 2) {
        char id[16];
        snprintf(id, sizeof id, "x%d", i);
        assert_int_equal(jd_customer_ack(c, id), 0);
    }
    assert_int_equal(c->npending, 12);
    assert_int_equal(c->nacked, 10);
    jd_customer_destroy(c);
}

/* Entry k of the ring in the text form's layout: the nbuckets values, then
 * the nbuckets counts. */
static double ring_entry(const struct jd_agg *a, uint32_t nb, uint32_t k)
{
    const struct jd_ring_bucket *bk = jd_ring_find(a->ring, k % nb);
    if (!bk)
        return 0;
    return k < nb ? bk->v : bk->n;
}

/* Sets entry k (same layout); a count must be a whole number. */
static void ring_set(struct jd_agg *a, uint32_t nb, uint32_t k, double x)
{
    struct jd_ring_bucket *bk = jd_ring_at(&a->ring, k % nb);
    if (k < nb)
        bk->v = x;
    else
        bk->n = (uint32_t)x;
}

/* Everything encode covers, field by field. */
static void assert_same_state(const struct jd_customer *a, const struct jd_customer *b,
                              const struct jd_ruleset *rs)
{
    assert_int_equal(a->applied_offset, b->applied_offset);
    assert_int_equal(a->first_seen, b->first_seen);
    assert_int_equal(a->last_seen, b->last_seen);
    if (a->last_channel || b->last_channel)
        assert_string_equal(a->last_channel, b->last_channel);
    assert_int_equal(a->ncounts, b->ncounts);
    for (size_t i = 0; i < a->ncounts; i++)
        assert_int_equal(jd_customer_count_n(a, i),
                         jd_customer_count(b, jd_customer_count_type(a, i)));
    assert_memory_equal(&a->spend, &b->spend, sizeof a->spend);
    assert_int_equal(a->last_score, b->last_score);
    assert_int_equal(a->stage, b->stage);
    assert_int_equal(a->segments, b->segments);
    assert_int_equal(a->naggs, b->naggs);
    for (size_t i = 0; i < a->naggs; i++) {
        const struct jd_agg *x = &a->aggs[i], *y = &b->aggs[i];
        assert_true(x->v == y->v && x->n == y->n);
        assert_int_equal(x->t, y->t);
        uint32_t nb = rs ? jd_rules_agg_nbuckets(rs, i) : 0;
        if (nb)
            assert_int_equal(x->base, y->base);
        /* a ring not allocated yet is all zero */
        for (uint32_t k = 0; k < 2 * nb; k++)
            assert_true(ring_entry(x, nb, k) == ring_entry(y, nb, k));
        if (x->s || y->s)
            assert_string_equal(x->s, y->s);
    }
    assert_int_equal(a->ntriggers, b->ntriggers);
    for (size_t i = 0; i < a->ntriggers; i++) {
        assert_int_equal(jd_customer_last_fired(a)[i], jd_customer_last_fired(b)[i]);
        assert_int_equal(jd_customer_fired_count(a)[i], jd_customer_fired_count(b)[i]);
    }
    assert_int_equal(a->next_timer, b->next_timer);
    for (size_t k = 0; k < JD_RECENT_IDS; k++)
        assert_int_equal(a->recent_ids[(a->recent_pos + k) % JD_RECENT_IDS],
                         b->recent_ids[(b->recent_pos + k) % JD_RECENT_IDS]);
}

static struct jd_customer *roundtrip(const struct jd_customer *c, const struct jd_ruleset *rs,
                                     struct jd_buf *b)
{
    char err[256];
    jd_buf_reset(b);
    jd_customer_encode(c, rs, b);
    struct jd_customer *d = jd_customer_new(c->id, c->id_len, c->partition, rs);
    int rc = jd_customer_decode(d, rs, b->data, b->len, err, sizeof err);
    if (rc != 0)
        fail_msg("decode failed: %s (value %s)", err, b->data);
    assert_same_state(c, d, rs);
    return d;
}

static void test_roundtrip_core(void **unused)
{
    struct jd_buf b;
    jd_buf_init(&b);
    struct jd_customer *c = jd_customer_new("c1", 2, 7, NULL);

    /* empty customer */
    struct jd_customer *d = roundtrip(c, NULL, &b);
    assert_string_equal(b.data, "v1");
    jd_customer_destroy(d);

    c->applied_offset = 123456789012;
    struct jd_event ev = mkev("e1", "purchase", "web", 1700000000000);
    ev.has_amount = 1;
    ev.amount = 0.1 + 0.2; /* not representable in 15 digits */
    jd_customer_apply_core(c, &ev);
    ev = mkev("e2", "a|b=c,d%e\nf", "caf\xc3\xa9 |=,%\x01", 1700000000001);
    jd_customer_apply_core(c, &ev);
    ev = mkev("e3", "feedback", NULL, 1600000000000);
    ev.has_score = 1;
    ev.score = 0;
    jd_customer_apply_core(c, &ev);
    c->next_timer = 1700003600000;
    for (int i = 0; i < 11; i++) {
        char id[16];
        snprintf(id, sizeof id, "e%d", i);
        (void)jd_customer_seen_event(c, id);
    }
    d = roundtrip(c, NULL, &b);
    /* escaped: no raw separators or control bytes from user strings */
    assert_non_null(strstr(b.data, "|c.a%7Cb%3Dc%2Cd%25e%0Af=1"));
    assert_non_null(strstr(b.data, "|ch=caf\xc3\xa9 %7C%3D%2C%25%01"));
    assert_non_null(strstr(b.data, "|p=7:123456789012"));
    assert_non_null(strstr(b.data, "|sc=0"));
    assert_int_equal(d->applied_offset, 123456789012);
    /* the duplicate guard survives a reload */
    assert_int_equal(jd_customer_seen_event(d, "e10"), 1);
    assert_int_equal(jd_customer_seen_event(d, "e2"), 0);
    jd_customer_destroy(d);

    /* a typical customer stays small */
    assert_true(b.len < 400);

    /* the watermark belongs to its source: another source does not inherit it,
     * and a reader that does not know the source (partition < 0) takes it */
    char err[128];
    d = jd_customer_new("c1", 2, 8, NULL);
    assert_int_equal(jd_customer_decode(d, NULL, b.data, b.len, err, sizeof err), 0);
    assert_int_equal(d->applied_offset, -1);
    assert_int_equal(d->first_seen, 1600000000000);
    jd_customer_destroy(d);
    d = jd_customer_new("c1", 2, -1, NULL);
    assert_int_equal(jd_customer_decode(d, NULL, b.data, b.len, err, sizeof err), 0);
    assert_int_equal(d->partition, 7);
    assert_int_equal(d->applied_offset, 123456789012);
    jd_customer_destroy(d);

    jd_customer_destroy(c);
    jd_buf_free(&b);
}

static void test_corrupt(void **unused)
{
    static const char *const bad[] = {
        "",
        "v2|fs=1",
        "v1|",
        "v1|fs",
        "v1|=3",
        "v1|fs=abc",
        "v1|fs=1x",
        "v1|fs=",
        "v1|p=3",
        "v1|p=x:1",
        "v1|p=3:-5",
        "v1|c.purchase=-1",
        "v1|c.purchase=1099511627776", /* past JD_COUNT_MAX */
        "v1|c.pur%2=1",
        "v1|c.pur%zzchase=1",
        "v1|c.purchase=1|zz=1",
        "v1|sp=1.5.5",
        "v1|sp=",
        "v1|sc=-2",
        "v1|ch=a\nb",
        "v1|ri=xyz",
        "v1|ri=1,2,3,4,5,6,7,8,9",
        "v1|ri=0",
        "v1|ri=",
        "v1|tf.x=12",
        "v1|tf.x=12:-1",
        "v1|a.k=1",
        "v1|a.k=1,2,3,4,5,0:1,99:2",
        "v1|a.k=1,2,3,4,5,3",
        "v1|a.k=1,2,3,4,x",
        "v1|a.k=1,2,3,4,5,3-1:2",
        "v1|a.k=1,2,3,4,5,3-:2",
        "v1|a.k=1,2,3,4,5,-1:2",
        "v1|a.k=1,2,3,4,5,0-10:2",
        "v1|a.k=1,2,3,4,5c,5:2",
        "v1|a.k=1,2,3,4,c,0:1",
        "v1|a.k=1,2,3,4,5,1:",
        "v1|fs=1||ls=2",
        "v1 |fs=1",
    };
    char err[256];
    struct jd_customer *c = jd_customer_new("c1", 2, 0, NULL);
    c->first_seen = 42;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = jd_customer_decode(c, NULL, bad[i], strlen(bad[i]), err, sizeof err);
        if (rc != -1)
            fail_msg("accepted corrupt value \"%s\"", bad[i]);
        assert_non_null(strstr(err, "corrupt state"));
        /* nothing half-applied */
        assert_int_equal(c->first_seen, 42);
        assert_int_equal(c->ncounts, 0);
    }
    /* length-bounded: bytes after len are not read */
    const char *v = "v1|fs=5|garbage";
    assert_int_equal(jd_customer_decode(c, NULL, v, 7, err, sizeof err), 0);
    assert_int_equal(c->first_seen, 5);
    /* names the rule set does not know are dropped, not errors */
    v = "v1|st=gone|sg=gone,also|tf.gone=5:1|a.gone=1,2,3|as.gone=x";
    assert_int_equal(jd_customer_decode(c, NULL, v, strlen(v), err, sizeof err), 0);
    assert_int_equal(c->stage, -1);
    assert_int_equal(c->segments, 0);
    jd_customer_destroy(c);
}

/* -------- with a compiled rule set -------- */

struct rules_fixture {
    struct jd_rule_src stages[3];
    struct jd_rule_src segments[3];
    struct jd_trigger_src triggers[2];
    struct jd_rules_src src;
    struct jd_ruleset *rs;
};

static void rule(struct jd_rule_src *r, const char *name, const char *expr)
{
    memset(r, 0, sizeof *r);
    r->name = (char *)name;
    r->expr = (char *)expr;
    r->file = "test.conf";
    r->line = 1;
    r->col = 1;
    r->enabled = 1;
}

/* variant 0: the original rule set; variant 1: a reload that renames a
 * stage, drops the "detractor" segment and the feedback aggregate, and adds
 * a trigger. */
static struct jd_ruleset *compile(struct rules_fixture *f, int variant)
{
    memset(f, 0, sizeof *f);
    rule(&f->stages[0], "repeat", "count('purchase') >= 2");
    rule(&f->stages[1], variant ? "one_time" : "first_purchase", "count('purchase') == 1");
    rule(&f->stages[2], "prospect", "true");
    rule(&f->segments[0], "vip", "count('purchase', 30d) >= 3");
    size_t nseg = 1;
    if (!variant)
        rule(&f->segments[nseg++], "detractor", "last('feedback', score) <= 6");
    rule(&f->segments[nseg++], "big", "sum('purchase', amount, 30d) >= 100");
    size_t ntrig = 0;
    if (variant) {
        rule(&f->triggers[ntrig].on, "newcomer", "event: event.type == 'signup'");
        f->triggers[ntrig++].kind = JD_KIND_REWARD;
    }
    rule(&f->triggers[ntrig].on, "vip_welcome", "enter:vip");
    f->triggers[ntrig].kind = JD_KIND_REWARD;
    f->triggers[ntrig++].cooldown_ms = 30LL * 86400000;
    f->src.stages = f->stages;
    f->src.nstages = 3;
    f->src.segments = f->segments;
    f->src.nsegments = nseg;
    f->src.triggers = f->triggers;
    f->src.ntriggers = ntrig;
    struct jd_errors errs;
    jd_errors_init(&errs);
    if (jd_rules_compile(&f->src, &f->rs, &errs) != 0) {
        jd_errors_print(&errs, stderr);
        fail_msg("rules did not compile");
    }
    jd_errors_free(&errs);
    return f->rs;
}

static void fill_rule_state(struct jd_customer *c, const struct jd_ruleset *rs)
{
    c->stage = jd_rules_stage_index(rs, "repeat");
    c->segments = UINT64_C(1) << jd_rules_segment_index(rs, "vip");
    int d = jd_rules_segment_index(rs, "detractor");
    if (d >= 0)
        c->segments |= UINT64_C(1) << d;
    for (size_t i = 0; i < c->naggs; i++) {
        struct jd_agg *a = &c->aggs[i];
        a->v = 3.5 + (double)i;
        a->n = 2;
        a->t = 1700000000000 + (int64_t)i;
        uint32_t nb = jd_rules_agg_nbuckets(rs, i);
        if (nb) {
            a->base = 1690000000000;
            ring_set(a, nb, 0, 1);
            ring_set(a, nb, nb - 1, 2.25);
            ring_set(a, nb, nb, 7); /* first count */
        }
    }
    int t = jd_rules_trigger_index(rs, "vip_welcome");
    jd_customer_last_fired(c)[t] = 1700000000123;
    jd_customer_fired_count(c)[t] = 2;
}

static void test_roundtrip_rules(void **unused)
{
    struct rules_fixture f;
    struct jd_ruleset *rs = compile(&f, 0);
    assert_true(jd_rules_naggs(rs) >= 1);
    struct jd_customer *c = jd_customer_new("c1", 2, 1, rs);
    assert_int_equal(c->naggs, jd_rules_naggs(rs));
    assert_int_equal(c->ntriggers, 1);

    struct jd_buf b;
    jd_buf_init(&b);
    struct jd_customer *d = roundtrip(c, rs, &b); /* fresh: nothing but the version */
    assert_string_equal(b.data, "v1");
    jd_customer_destroy(d);

    struct jd_event ev = mkev("e1", "purchase", "web", 1700000000000);
    jd_customer_apply_core(c, &ev);
    fill_rule_state(c, rs);
    d = roundtrip(c, rs, &b);
    assert_non_null(strstr(b.data, "|st=repeat"));
    assert_non_null(strstr(b.data, "|sg=vip,detractor"));
    assert_non_null(strstr(b.data, "|tf.vip_welcome=1700000000123:2"));
    jd_customer_destroy(d);

    /* count windows (both halves equal) and runs of equal buckets are
     * written compactly */
    int windowed = 0;
    for (size_t i = 0; i < c->naggs; i++) {
        struct jd_agg *a = &c->aggs[i];
        uint32_t nb = jd_rules_agg_nbuckets(rs, i);
        if (!nb)
            continue;
        int dup = windowed++ % 2 == 0;
        if (a->ring)
            a->ring->len = 0; /* all zero */
        for (uint32_t k = 10; k < nb; k++) {
            double x = k < 20 ? 1 : 2; /* runs */
            ring_set(a, nb, k, x);
            ring_set(a, nb, nb + k, x * (dup ? 1 : 3));
        }
        /* not a zero to drop (a count is a whole number: no -0 in the
         * counts, so only where values and counts differ) */
        if (!dup)
            ring_set(a, nb, nb - 1, -0.0);
    }
    assert_true(windowed > 0);
    d = roundtrip(c, rs, &b);
    assert_non_null(strstr(b.data, "c,10-19:1,20-29:2|"));
    if (windowed > 1)
        assert_non_null(strstr(b.data, ",10-19:1,20-28:2,29:-0,40-49:3,50-59:6|"));
    for (size_t i = 0; i < c->naggs; i++)
        for (uint32_t k = 0; k < 2 * jd_rules_agg_nbuckets(rs, i); k++) {
            uint32_t nb = jd_rules_agg_nbuckets(rs, i);
            double x = ring_entry(&c->aggs[i], nb, k), y = ring_entry(&d->aggs[i], nb, k);
            assert_memory_equal(&x, &y, sizeof x);
        }
    jd_customer_destroy(d);
    jd_customer_destroy(c);
    jd_buf_free(&b);
    jd_rules_destroy(rs);
}

static void test_rebind(void **unused)
{
    struct rules_fixture f0, f1;
    struct jd_ruleset *rs0 = compile(&f0, 0);
    struct jd_ruleset *rs1 = compile(&f1, 1);
    struct jd_customer *c = jd_customer_new("c1", 2, 1, rs0);
    struct jd_event ev = mkev("e1", "purchase", "web", 1700000000000);
    jd_customer_apply_core(c, &ev);
    (void)jd_customer_seen_event(c, "e1");
    c->applied_offset = 99;
    fill_rule_state(c, rs0);
    add(c, "t1", "h1")->stored = 1;
    c->dirty = 1;
    c->exists = 1;

    /* what rs0 and rs1 share, by key */
    size_t n0 = jd_rules_naggs(rs0), n1 = jd_rules_naggs(rs1);
    double v_of[16];
    for (size_t j = 0; j < n1 && j < 16; j++) {
        v_of[j] = -1;
        for (size_t i = 0; i < n0; i++)
            if (strcmp(jd_rules_agg_key(rs0, i), jd_rules_agg_key(rs1, j)) == 0)
                v_of[j] = c->aggs[i].v;
    }

    jd_customer_rebind(c, rs0, rs1);
    assert_int_equal(c->naggs, n1);
    assert_int_equal(c->ntriggers, 2);
    assert_int_equal(c->stage, jd_rules_stage_index(rs1, "repeat"));
    assert_int_equal(c->segments, UINT64_C(1) << jd_rules_segment_index(rs1, "vip"));
    int t = jd_rules_trigger_index(rs1, "vip_welcome");
    assert_int_equal(jd_customer_last_fired(c)[t], 1700000000123);
    assert_int_equal(jd_customer_fired_count(c)[t], 2);
    assert_int_equal(jd_customer_fired_count(c)[jd_rules_trigger_index(rs1, "newcomer")], 0);
    for (size_t j = 0; j < n1 && j < 16; j++)
        assert_true(c->aggs[j].v == (v_of[j] < 0 ? 0 : v_of[j]));
    /* core, outbox and flags untouched */
    assert_int_equal(jd_customer_count(c, "purchase"), 1);
    assert_int_equal(c->applied_offset, 99);
    assert_int_equal(jd_customer_seen_event(c, "e1"), 1);
    assert_int_equal(c->npending, 1);
    assert_true(c->dirty && c->exists);

    /* a stage renamed away is dropped */
    c->stage = jd_rules_stage_index(rs1, "one_time");
    jd_customer_rebind(c, rs1, rs0);
    assert_int_equal(c->stage, -1);
    assert_int_equal(c->naggs, n0);

    jd_customer_destroy(c);
    jd_rules_destroy(rs0);
    jd_rules_destroy(rs1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_core),      cmocka_unit_test(test_counts_mixed),
        cmocka_unit_test(test_seen_event),      cmocka_unit_test(test_outbox),
        cmocka_unit_test(test_roundtrip_core),  cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_roundtrip_rules), cmocka_unit_test(test_rebind),
        cmocka_unit_test(test_known_names),     cmocka_unit_test(test_tz_pool),
    };
    return jd_run_tests_in_pool(tests, NULL, NULL);
}
