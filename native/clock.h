/* The monotonic clock in milliseconds, for the deadlines, back-offs and waits of link.c, library.c and agent.c. */
#ifndef AKV_CLOCK_H
#define AKV_CLOCK_H

#include <time.h>

/* The monotonic time ms milliseconds from now. */
struct timespec clock_after_ms(unsigned long ms);
/* Milliseconds since t (negative while t is ahead). */
long clock_ms_since(const struct timespec *t);
/* Milliseconds until deadline, as poll() takes them: 0 once it has passed, at most 1000000. */
int clock_ms_until(const struct timespec *deadline);
void clock_sleep_ms(long ms);

#endif
