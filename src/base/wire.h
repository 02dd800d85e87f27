/* wire.h - the node socket's line format: one message per line, a verb and key=value fields, percent-encoded. */
#ifndef VRAM_WIRE_H
#define VRAM_WIRE_H

#include <stddef.h>
#include <stdint.h>

/*
 * THE NODE PROTOCOL (version 1)
 *
 * vramd listens on a Unix stream socket (VRAM_NODE_SOCKET); every other
 * manager on the machine connects to it as a member. Both directions carry
 * lines of at most VRAM_WIRE_LINE_MAX bytes ending in '\n':
 *
 *     VERB key=value key=value ...
 *
 * A value's bytes outside [A-Za-z0-9._~:/@+,-] are written %XX, so a value
 * never holds a blank, '=', '%', a control byte or a newline. Unknown keys
 * are ignored (newer peers may add fields); a line that does not parse, is
 * too long, or carries an unknown verb ends the connection.
 *
 * member -> vramd
 *   hello v=1 pid=P name=N backend=host|cuda devices=UUID,UUID totals=B,B
 *                                  first; devices by index (uuid "" = not
 *                                  shareable: never part of node eviction)
 *   model name=M dev=I state=gpu bytes=B leases=L idle=S idle_timeout=S
 *         release_timeout=S immediate=0|1 source=TEXT error=TEXT
 *                                  a model's registration or change (upsert)
 *   drop name=M                    a model was unregistered
 *   need id=K dev=I bytes=B for=M  an acquire of M cannot map B bytes on
 *                                  device I: free that much elsewhere
 *   ack id=K                       an order arrived (sent at once, before the
 *                                  work: an owner that does not ack within
 *                                  2 s is skipped as unresponsive)
 *   done id=K rc=R freed=B msg=TEXT
 *                                  the answer to an order (rc 0 or VRAM_E*;
 *                                  freed: device bytes it gave back, 0 when
 *                                  the model was not on the device)
 *
 * vramd -> member
 *   welcome v=1 member=ID
 *   offload id=K name=M            orders, carried out by the owner with
 *   release id=K name=M            VRAM_NOWAIT (a leased model answers
 *   set id=K name=M idle_timeout=S | release_timeout=S | immediate=0|1
 *                                  VRAM_EBUSY); each is answered by done
 *   freed id=K bytes=B             the answer to need: bytes vramd had
 *                                  offloaded for it (0: nothing could go)
 *
 * idle is seconds since the model's last use (0 while leased): vramd turns it
 * into a time on its own clock, so members need no common clock.
 */

#define VRAM_WIRE_LINE_MAX 4096
#define VRAM_WIRE_FIELDS_MAX 24

/* A parsed line: pointers into the line's own (decoded in place) bytes. */
typedef struct vram__wire_msg {
    const char *verb;
    int n;
    const char *key[VRAM_WIRE_FIELDS_MAX];
    const char *val[VRAM_WIRE_FIELDS_MAX];
} vram__wire_msg;

/* Parses one line (without its '\n'), decoding values in place. Returns 0,
 * or -1 when it is not a well-formed message (no verb, a field without '=',
 * a bad %XX, an empty key, a NUL byte, too many fields). */
int vram__wire_parse(char *line, vram__wire_msg *msg);

/* The value of key, or NULL when the message has none. */
const char *vram__wire_get(const vram__wire_msg *msg, const char *key);
/* Numbers: 0 with *out set, -1 when absent or not entirely a number
 * (u64: decimal digits only; dbl: finite; int: within [lo, hi]). */
int vram__wire_u64(const vram__wire_msg *msg, const char *key, uint64_t *out);
int vram__wire_dbl(const vram__wire_msg *msg, const char *key, double *out);
int vram__wire_int(const vram__wire_msg *msg, const char *key, long lo, long hi, long *out);

/* Building a line. Appends past the capacity set `overflow`; end() then
 * fails. */
typedef struct vram__wire_out {
    char buf[VRAM_WIRE_LINE_MAX + 1];
    size_t n;
    int overflow;
} vram__wire_out;
void vram__wire_begin(vram__wire_out *o, const char *verb);
void vram__wire_str(vram__wire_out *o, const char *key, const char *val);
void vram__wire_uint(vram__wire_out *o, const char *key, uint64_t v);
void vram__wire_num(vram__wire_out *o, const char *key, double v);
/* Adds the '\n'. Returns the line's length, or -1 when it did not fit. */
long vram__wire_end(vram__wire_out *o);

/* Reading lines from a stream: bytes go in with feed(), whole lines come
 * out of next(). */
typedef struct vram__wire_reader {
    char buf[VRAM_WIRE_LINE_MAX + 1];
    size_t n;    /* bytes held */
    size_t off;  /* start of the next line */
} vram__wire_reader;
/* Room for more bytes: *room gets the count (0 when the buffer holds a
 * line too long to ever end: the peer is broken). */
char *vram__wire_space(vram__wire_reader *r, size_t *room);
/* Records that n bytes were written at vram__wire_space(). */
void vram__wire_wrote(vram__wire_reader *r, size_t n);
/* The next whole line (NUL-terminated in place, without '\n'), or NULL
 * when none is complete yet. */
char *vram__wire_next(vram__wire_reader *r);

#endif /* VRAM_WIRE_H */
