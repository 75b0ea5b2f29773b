/* pyscan: the import statements a Python source runs when it is imported —
 * a lexical scan, nothing else (no tree: fs/ahead.c resolves the names).
 * The source is untrusted bytes (a wheel member): every buffer is bounded,
 * nothing recurses, and input that is not Python yields fewer or odd names,
 * never a fault.  Fuzzed by tests/fuzz/fuzz_pyscan.c.
 *
 * What is found: `import a.b, c as d` and `from [.]*[m] import x, (y as z)`
 * statements (also after `;`, across parentheses and backslash
 * continuations), outside strings and comments, that run when the module is
 * executed:
 *   PYSCAN_TOP     statements at indent 0 only;
 *   PYSCAN_BLOCKS  also inside top-level `try`, `else`, `finally`, `with`,
 *                  `for`, `while`, `match` and `if`/`elif` blocks, but not in
 *                  `def`/`class` bodies (not run at import), `except` clauses
 *                  (the fallback of a try that normally succeeds), nor
 *                  `if`/`elif` blocks whose condition names TYPE_CHECKING or
 *                  __name__, or is a literal False/0. */
#ifndef SITEFS_PYSCAN_H
#define SITEFS_PYSCAN_H

#include <stddef.h>

enum pyscan_mode {
	PYSCAN_TOP = 1,
	PYSCAN_BLOCKS = 2,
	PYSCAN_ALL = 3, /* as PYSCAN_BLOCKS, and in def and class bodies too */
};

/* One imported name: level = leading dots of a from-import (0: absolute);
 * module = the dotted module ("" for `from . import x`); name = the name a
 * from-import takes from it ("*" for a star import), NULL for `import m`.
 * The strings are valid during the call only. */
typedef void (*pyscan_fn)(void *ud, unsigned level, const char *module, const char *name);

/* Calls fn for every import of src[0, len) in mode; returns their number. */
size_t pyscan_imports(const char *src, size_t len, enum pyscan_mode mode, pyscan_fn fn, void *ud);

#endif
