/* flags_test.c: unit tests for the command-line flag parser (core/flags.c): `--flag value` and
 * `--flag=value`, integer and decimal ranges (bounds inclusive, overflow, signs, points), the
 * repeatable list flag and its capacity, every error and its one-line message, -h/--help and
 * exit flags stopping the parse, a repeated flag keeping its last value, the --help text with
 * and without defaults, and arguments placed flush against a guard page. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "core/flags.h"
#include "test.h"

typedef struct {
  const char *name, *empty;
  long count;
  double rate;
  ox_flag_list_t tags;
  int version;
} opts_t;

static const ox_flag_t k_flags[] = {
#define O(f) offsetof(opts_t, f)
    {"name", OX_FLAG_STR, O(name), 0, 0, "a name"},
    {"empty", OX_FLAG_STR, O(empty), 0, 0, "empty by default"},
    {"count", OX_FLAG_INT, O(count), 2, 1e15, "a count"},
    {"rate", OX_FLAG_DEC, O(rate), 0.001, 1e6, "a rate"},
    {"tag", OX_FLAG_LIST, O(tags), 0, 0, "a tag (repeatable)"},
    {"help", OX_FLAG_HELP, 0, 0, 0, "this text"},
    {"version", OX_FLAG_EXIT, O(version), 0, 0, "print the version"},
#undef O
};

static const ox_flags_spec_t k_spec = {
    .prog = "prog",
    .flags = k_flags,
    .nflags = sizeof k_flags / sizeof k_flags[0],
    .usage_head = "usage: prog [--flag value]...\n\n",
    .usage_tail = "tail\n",
    .name_width = 8,
};

static const char *tag_items[2];
static opts_t O;
static char errbuf[512]; /* what the last parse printed */

/* Parses a NULL-terminated argument list (argv[0] is added) into O, reset to its defaults. */
static int parse_v(const char *const *args) {
  char *argv[32] = {"prog"};
  int argc = 1;
  while (*args && argc < 31) argv[argc++] = (char *)*args++;
  O = (opts_t){.name = "dflt", .empty = "", .count = 10, .rate = 1.5};
  O.tags = (ox_flag_list_t){tag_items, 0, 2};
  char *buf = NULL;
  size_t len = 0;
  FILE *err = open_memstream(&buf, &len);
  int rc = ox_flags_parse(&k_spec, argc, argv, &O, err);
  fclose(err);
  snprintf(errbuf, sizeof errbuf, "%s", buf ? buf : "");
  free(buf);
  return rc;
}
#define PARSE(...) parse_v((const char *const[]){__VA_ARGS__, NULL})

/* Expects a parse error with exactly this message line. */
#define CHECK_FAILS(msg, ...)                   \
  do {                                          \
    CHECK_INT(PARSE(__VA_ARGS__), OX_EINVALID); \
    CHECK_STR(errbuf, "prog: " msg "\n");       \
  } while (0)

TEST(test_no_flags_keeps_defaults) {
  char *argv[] = {"prog", NULL};
  O = (opts_t){.name = "dflt", .count = 10, .rate = 1.5};
  CHECK_INT(ox_flags_parse(&k_spec, 1, argv, &O, stderr), 0);
  CHECK_STR(O.name, "dflt");
  CHECK_INT(O.count, 10);
  CHECK(O.rate == 1.5);
}

TEST(test_both_syntaxes) {
  CHECK_INT(PARSE("--name", "a", "--count", "42", "--rate", "2.5"), 0);
  CHECK_STR(O.name, "a");
  CHECK_INT(O.count, 42);
  CHECK(O.rate == 2.5);
  CHECK_STR(errbuf, "");
  CHECK_INT(PARSE("--name=b", "--count=43", "--rate=3"), 0);
  CHECK_STR(O.name, "b");
  CHECK_INT(O.count, 43);
  CHECK(O.rate == 3.0);
  /* After '=' everything is the value, another '=' included; an empty value is a value. */
  CHECK_INT(PARSE("--name=x=y"), 0);
  CHECK_STR(O.name, "x=y");
  CHECK_INT(PARSE("--name="), 0);
  CHECK_STR(O.name, "");
  /* With a space the next argument is the value even when it looks like a flag. */
  CHECK_INT(PARSE("--name", "--count"), 0);
  CHECK_STR(O.name, "--count");
  CHECK_INT(O.count, 10);
}

TEST(test_int_range_inclusive) {
  CHECK_INT(PARSE("--count", "2"), 0);
  CHECK_INT(O.count, 2);
  CHECK_INT(PARSE("--count", "1000000000000000"), 0);
  CHECK_INT(O.count, 1000000000000000L);
  CHECK_INT(PARSE("--count", "0002"), 0); /* leading zeros are digits */
  CHECK_INT(O.count, 2);
  CHECK_FAILS("--count must be an integer from 2 to 1000000000000000, not '1'", "--count", "1");
  CHECK_FAILS("--count must be an integer from 2 to 1000000000000000, not '1000000000000001'",
              "--count", "1000000000000001");
}

TEST(test_int_rejects_non_digits_and_overflow) {
  const char *bad[] = {"99999999999999999999",
                       "9223372036854775808",
                       "-1",
                       "+3",
                       "3.0",
                       "1e3",
                       " 3",
                       "3 ",
                       "0x10",
                       "",
                       "3a"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char want[160];
    snprintf(want, sizeof want,
             "prog: --count must be an integer from 2 to 1000000000000000, not '%s'\n", bad[i]);
    CHECK_INT(PARSE("--count", bad[i]), OX_EINVALID);
    CHECK_STR(errbuf, want);
    CHECK_INT(O.count, 10); /* untouched */
  }
}

/* A flag whose range starts below zero takes a leading '-' (--grpc-port -1 turns gRPC off);
 * "-" alone, "--1", "-+1" and values below the minimum are still refused. */
TEST(test_int_negative_minimum) {
  typedef struct {
    long port;
  } popts_t;
  static const ox_flag_t fl[] = {
      {"port", OX_FLAG_INT, offsetof(popts_t, port), -1, 65535, "a port (-1: off)"}};
  static const ox_flags_spec_t sp = {.prog = "prog", .flags = fl, .nflags = 1};
  struct {
    const char *val;
    int rc;
    long want;
  } cases[] = {{"-1", 0, -1},
               {"0", 0, 0},
               {"-0", 0, 0},
               {"65535", 0, 65535},
               {"-2", OX_EINVALID, 7},
               {"-", OX_EINVALID, 7},
               {"--1", OX_EINVALID, 7},
               {"-+1", OX_EINVALID, 7},
               {"- 1", OX_EINVALID, 7},
               {"65536", OX_EINVALID, 7}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    popts_t o = {.port = 7};
    char *argv[] = {"prog", "--port", (char *)cases[i].val, NULL};
    FILE *devnull = fopen("/dev/null", "w");
    CHECK_INT(ox_flags_parse(&sp, 3, argv, &o, devnull), cases[i].rc);
    fclose(devnull);
    CHECK_INT(o.port, cases[i].want);
  }
}

TEST(test_decimals) {
  struct {
    const char *in;
    double want;
  } ok[] = {{"12.5", 12.5},    {"0.001", 0.001},
            {".5", 0.5},       {"5.", 5.0},
            {"1000000", 1e6},  {"007.25", 7.25},
            {"0.0010", 0.001}, {"0000000000000001.25", 1.25} /* 18 digits */};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    CHECK_INT(PARSE("--rate", ok[i].in), 0);
    CHECK(O.rate == ok[i].want);
  }
  const char *bad[] = {"0",
                       "0.0009",
                       "1000000.1",
                       "1.2.3",
                       ".",
                       "",
                       "-1",
                       "+1",
                       "1e3",
                       "1,5",
                       "00000000000000001.25" /* 19 digits */,
                       "1234567890123456789"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char want[160];
    snprintf(want, sizeof want, "prog: --rate must be a number from 0.001 to 1e+06, not '%s'\n",
             bad[i]);
    CHECK_INT(PARSE("--rate", bad[i]), OX_EINVALID);
    CHECK_STR(errbuf, want);
    CHECK(O.rate == 1.5);
  }
}

TEST(test_list_repeatable) {
  CHECK_INT(PARSE("--tag", "a", "--name", "n", "--tag=b"), 0);
  CHECK_INT(O.tags.n, 2);
  CHECK_STR(O.tags.items[0], "a");
  CHECK_STR(O.tags.items[1], "b");
  CHECK_INT(PARSE("--name", "n"), 0);
  CHECK_INT(O.tags.n, 0);
  CHECK_FAILS("at most 2 --tag flags", "--tag", "a", "--tag", "b", "--tag", "c");
  CHECK_FAILS("flag --tag needs a value", "--tag", "a", "--tag");
}

TEST(test_unknown_and_unexpected) {
  CHECK_FAILS("unknown flag '--nope' (see --help)", "--nope");
  CHECK_FAILS("unknown flag '--nope' (see --help)", "--nope=3");
  CHECK_FAILS("unknown flag '--' (see --help)", "--");
  CHECK_FAILS("unknown flag '--' (see --help)", "--=5");
  CHECK_FAILS("unknown flag '--nam' (see --help)", "--nam", "x"); /* no prefix matching */
  CHECK_FAILS("unknown flag '--names' (see --help)", "--names", "x");
  CHECK_FAILS("unknown flag '--Name' (see --help)", "--Name", "x");
  CHECK_FAILS("unexpected argument 'stray' (see --help)", "stray");
  CHECK_FAILS("unexpected argument '-n' (see --help)", "-n", "x");
  CHECK_FAILS("unexpected argument '' (see --help)", "");
  /* Parsing stops at the first error: a later bad argument is not reported. */
  CHECK_FAILS("unknown flag '--a' (see --help)", "--a", "--b");
}

TEST(test_missing_value) {
  CHECK_FAILS("flag --name needs a value", "--name");
  CHECK_FAILS("flag --count needs a value", "--name", "x", "--count");
  CHECK_FAILS("flag --rate needs a value", "--rate");
}

TEST(test_help_and_exit) {
  CHECK_INT(PARSE("--help"), OX_FLAGS_HELP);
  CHECK_INT(PARSE("-h"), OX_FLAGS_HELP);
  CHECK_STR(errbuf, "");
  /* Help stops the parse: what follows is not looked at, what came before is parsed. */
  CHECK_INT(PARSE("--count", "7", "--help", "--nope"), OX_FLAGS_HELP);
  CHECK_INT(O.count, 7);
  CHECK_FAILS("unknown flag '--nope' (see --help)", "--nope", "--help");
  CHECK_FAILS("flag --help takes no value", "--help=1");
  CHECK_INT(PARSE("--version", "--nope"), OX_FLAGS_EXIT);
  CHECK_INT(O.version, 1);
  CHECK_INT(PARSE("--name", "--version"), 0); /* a value, not the flag */
  CHECK_INT(O.version, 0);
  CHECK_FAILS("flag --version takes no value", "--version=1");
  /* Without a help entry in the table -h and --help still work. */
  ox_flags_spec_t bare = k_spec;
  bare.nflags = 5;
  char *argv[] = {"prog", "--help"};
  CHECK_INT(ox_flags_parse(&bare, 2, argv, &O, stderr), OX_FLAGS_HELP);
}

TEST(test_duplicate_last_wins) {
  CHECK_INT(PARSE("--name", "a", "--name=b", "--count", "5", "--count", "6"), 0);
  CHECK_STR(O.name, "b");
  CHECK_INT(O.count, 6);
  /* An earlier good value does not excuse a later bad one. */
  CHECK_FAILS("--count must be an integer from 2 to 1000000000000000, not '1'", "--count", "5",
              "--count", "1");
}

static char *usage_text(const void *defaults) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ox_flags_usage(&k_spec, defaults, f);
  fclose(f);
  return buf;
}

TEST(test_usage) {
  opts_t d = {.name = "dflt", .empty = "", .count = 10, .rate = 1.5};
  char *with = usage_text(&d);
  CHECK_STR(with,
            "usage: prog [--flag value]...\n\n"
            "  --name     a name (default dflt)\n"
            "  --empty    empty by default (default none)\n"
            "  --count    a count (default 10)\n"
            "  --rate     a rate (default 1.5)\n"
            "  --tag      a tag (repeatable)\n"
            "  --help     this text\n"
            "  --version  print the version\n"
            "tail\n");
  free(with);
  d.empty = NULL; /* a NULL string is shown as none too */
  with = usage_text(&d);
  CHECK(strstr(with, "  --empty    empty by default (default none)\n") != NULL);
  free(with);
  char *without = usage_text(NULL);
  CHECK_STR(without,
            "usage: prog [--flag value]...\n\n"
            "  --name     a name\n"
            "  --empty    empty by default\n"
            "  --count    a count\n"
            "  --rate     a rate\n"
            "  --tag      a tag (repeatable)\n"
            "  --help     this text\n"
            "  --version  print the version\n"
            "tail\n");
  free(without);
}

/* Flag names and values whose last byte is the last byte before a PROT_NONE page: the parser
 * must not read past the terminating NUL. */
TEST(test_guard_page) {
  long pg;
  char *m = ox_test_guard_map(&pg);
  if (!m) return;
  char *end = m + pg;
  const char *cases[][2] = {
      {"--count=123", NULL}, {"--count", "99999999999999999999"},
      {"--rate", "12.5"},    {"--rate=1.2.3", NULL},
      {"--nope", NULL},      {"--name", ""},
      {"--help", NULL},
  };
  int want[] = {0, OX_EINVALID, 0, OX_EINVALID, OX_EINVALID, 0, OX_FLAGS_HELP};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    /* Each argument placed flush against the guard, the second right before the first. */
    size_t l0 = strlen(cases[i][0]) + 1, l1 = cases[i][1] ? strlen(cases[i][1]) + 1 : 0;
    char *a0 = end - l0, *a1 = a0 - l1;
    memcpy(a0, cases[i][0], l0);
    if (l1) memcpy(a1, cases[i][1], l1);
    const char *args[] = {a0, l1 ? a1 : NULL, NULL};
    CHECK_INT(parse_v(args), want[i]);
  }
  ox_test_guard_free(m, pg);
}

TEST_MAIN(T(test_no_flags_keeps_defaults), T(test_both_syntaxes), T(test_int_range_inclusive),
          T(test_int_rejects_non_digits_and_overflow), T(test_int_negative_minimum),
          T(test_decimals), T(test_list_repeatable), T(test_unknown_and_unexpected),
          T(test_missing_value), T(test_help_and_exit), T(test_duplicate_last_wins), T(test_usage),
          T(test_guard_page))
