/* errbuf.c - errf: a reason into a caller's buffer, and -1 (see errbuf.h). */
#include "bridge/base/errbuf.h"

#include <stdarg.h>
#include <stdio.h>

int errf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return -1;
}
