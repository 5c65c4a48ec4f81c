/*
 * notify — systemd readiness notification (sd_notify protocol) without
 * libsystemd: one datagram to $NOTIFY_SOCKET. A no-op outside systemd.
 */
#ifndef JOURNEYD_NOTIFY_H
#define JOURNEYD_NOTIFY_H

#include <stdint.h>

/* Sends `state` ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...",
 * several separated by newlines). Returns 1 when sent, 0 when there is no
 * $NOTIFY_SOCKET, -1 on a send error. Safe to call often. */
int jd_notify(const char *state);

/* Half the watchdog interval systemd asked for ($WATCHDOG_USEC, honouring
 * $WATCHDOG_PID), in milliseconds: how often to send "WATCHDOG=1". 0 when
 * the watchdog is off. */
int64_t jd_notify_watchdog_interval_ms(void);

#endif
