/* pychars: the ASCII character classes Python's `re` and str methods use, as
 * the PEP 440 and PEP 508 parsers need them (packaging's regexes are the
 * reference).  Header-only; internal to resolver/. */
#ifndef SITEFS_PYCHARS_H
#define SITEFS_PYCHARS_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* str.isspace() for ASCII: includes \x1c-\x1f */
static inline bool py_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static inline bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static inline bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool is_alnum(unsigned char c)
{
	return is_digit(c) || is_alpha(c);
}

/* PEP 503 / PEP 440 separators */
static inline bool is_sep(unsigned char c)
{
	return c == '-' || c == '_' || c == '.';
}

static inline unsigned char to_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Number of digits starting at s[p] (s has n bytes). */
static inline size_t count_digits(const char *s, size_t n, size_t p)
{
	size_t q = p;

	while (q < n && is_digit(s[q]))
		q++;
	return q - p;
}

/* Case-insensitive "does word occur at s[p]" (word is lowercase). */
static inline bool match_ci(const char *s, size_t n, size_t p, const char *word)
{
	size_t l = strlen(word);

	if (p > n || l > n - p)
		return false;
	for (size_t i = 0; i < l; i++)
		if (to_lower(s[p + i]) != (unsigned char)word[i])
			return false;
	return true;
}

#endif
