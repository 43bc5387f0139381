/* flags.h: command-line flags from one declarative table: parsing, range checks and --help.
 *
 * Every onnxd program (the server, onnxd-bench, onnxd-ort-limit, onnxd-feature-bench) describes
 * its flags as a table of {name, type, offset, min, max, help} over its own options struct and
 * hands it to ox_flags_parse. Flags are `--name value` or `--name=value`; a flag given twice
 * keeps its last value (a list flag collects every value). Numbers are parsed by a hand-checked
 * digit loop: no sign, no exponent, no whitespace, overflow is an error. `-h` and `--help` are
 * always understood; the caller prints the text with ox_flags_usage.
 *
 * The parser never allocates: strings stored in the options point into argv, and a list flag
 * fills an array the caller provides.
 */
#ifndef OX_CORE_FLAGS_H
#define OX_CORE_FLAGS_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
  OX_FLAG_STR,  /* const char *: the value, borrowed from argv */
  OX_FLAG_INT,  /* long: decimal digits only, within [min, max] */
  OX_FLAG_DEC,  /* double: digits with at most one '.', at most 18 digits, within [min, max] */
  OX_FLAG_LIST, /* ox_flag_list_t: repeatable; each value appended, borrowed from argv */
  OX_FLAG_EXIT, /* int: takes no value; set to 1 and parsing stops (e.g. --version) */
  OX_FLAG_HELP, /* only listed in --help: -h and --help work whether or not a table has it */
} ox_flag_type_t;

typedef struct {
  const char *name; /* without the leading "--" */
  ox_flag_type_t type;
  size_t offset;    /* of the field in the options struct (offsetof); unused for OX_FLAG_HELP */
  double min, max;  /* inclusive range of OX_FLAG_INT and OX_FLAG_DEC (exact for |x| <= 2^53) */
  const char *help; /* one line of --help */
} ox_flag_t;

/* A repeatable flag's values: the caller points items at an array of cap entries. */
typedef struct {
  const char **items;
  size_t n, cap;
} ox_flag_list_t;

/* One program's flags and the text of its --help. */
typedef struct {
  const char *prog;       /* program name: prefix of every error message */
  const ox_flag_t *flags; /* the table, nflags entries */
  size_t nflags;
  const char *usage_head; /* printed before the flag list (usage line, description), or NULL */
  const char *usage_tail; /* printed after it, or NULL */
  int name_width;         /* column width of "--name" in --help, without the dashes */
} ox_flags_spec_t;

/* ox_flags_parse's results besides 0 (all flags parsed) and OX_EINVALID. */
enum { OX_FLAGS_HELP = 1, OX_FLAGS_EXIT = 2 };

/* Parses argv[1..argc) into opts, whose fields named by spec->flags hold the defaults on entry.
 * Returns 0; OX_FLAGS_HELP when -h or --help came (the caller prints ox_flags_usage); or
 * OX_FLAGS_EXIT when an OX_FLAG_EXIT flag came (its int is 1). Parsing stops at either, and
 * what followed is not looked at. On a bad argument (not a flag, unknown flag, missing value,
 * bad or out-of-range number, full list) returns OX_EINVALID after printing one line
 * "PROG: ..." to err. Values stored in opts are borrowed from argv. */
int ox_flags_parse(const ox_flags_spec_t *spec, int argc, char **argv, void *opts, FILE *err);

/* Prints spec's --help to out: usage_head, one line per flag ("  --NAME  HELP"), then
 * usage_tail. With defaults (an options struct holding the defaults, or NULL for none) each
 * string and number flag's line ends in " (default X)": an empty or NULL string shows as "none". */
void ox_flags_usage(const ox_flags_spec_t *spec, const void *defaults, FILE *out);

#endif
