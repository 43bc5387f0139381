/* container.h: from a pointer to a member back to the structure that embeds it (the intrusive
 * pattern of pool jobs, completions and fetches: the callback gets the member, the owner is
 * found by subtraction, no allocation and no void* context). */
#ifndef OX_CORE_CONTAINER_H
#define OX_CORE_CONTAINER_H

#include <stddef.h>

/* The type* whose field member is at ptr. ptr must point into such an object. */
#define ox_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
