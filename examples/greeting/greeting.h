#ifndef LRE_EXAMPLES_GREETING_GREETING_H_
#define LRE_EXAMPLES_GREETING_GREETING_H_

#include <stddef.h>

/* Writes "Hello from <name>!" into buf (always NUL-terminated when size > 0).
 * Returns the length the full greeting needs, like snprintf. */
int greeting_format(char* buf, size_t size, const char* name);

#endif /* LRE_EXAMPLES_GREETING_GREETING_H_ */
