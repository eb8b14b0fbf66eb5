/* A packet hook plugin for the tests of the hook ABI itself (not the vportfilter plugin).
 *
 * It acts on the first payload byte of an Ethernet/IPv4/UDP frame (offset 42), the
 * "marker":
 *   rx 0xd1  drop                  rx 0xe5  change the marker to 0xe6 in place
 *   rx 0xf7  replace with a frame 100 bytes longer (marker 0xf8)
 *   rx 0xc4  take it, then inject it back as received (marker 0xc5)
 *   tx 0xd2  drop
 * Commands: test-hook/show (counters per port), test-hook/inject PORT rx|tx HEX.
 * Args: "fail" makes init() refuse to start.
 *
 * It is an ABI version 1 plugin on purpose (it exports no OVS_PACKET_HOOK_ABI_SYMBOL and
 * uses only version 1 services), so its tests show that the switch still loads and
 * serves version 1 plugins; the vportfilter plugin speaks the current version.
 */
#include <openvswitch/packet-hook.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARKER 42
#define PLUGIN_ABI 1

static const struct ovs_packet_hook_host *host;

struct port {
    char name[64];
    unsigned long rx, tx, rx_dropped, tx_dropped, modified, replaced, taken;
    struct port *next;
};
static struct port *ports;

static void *
port_open(const char *name, const char *type)
{
    char msg[160];
    struct port *p = calloc(1, sizeof *p);

    snprintf(p->name, sizeof p->name, "%s", name);
    p->next = ports;
    ports = p;
    snprintf(msg, sizeof msg, "test hook: opened port %s (type %s)", name, type);
    host->log(OVS_PACKET_HOOK_LOG_INFO, msg);
    return p;
}

static void
port_close(void *ctx)
{
    struct port **pp;

    for (pp = &ports; *pp; pp = &(*pp)->next) {
        if (*pp == ctx) {
            *pp = (*pp)->next;
            break;
        }
    }
    free(ctx);
}

static int
marker(const struct ovs_packet *pkt)
{
    return host->packet_size(pkt) > MARKER ? host->packet_data(pkt)[MARKER] : -1;
}

static void
rx(void *ctx, int queue, struct ovs_packet_hook_batch *b)
{
    struct port *p = ctx;

    (void) queue;
    for (uint32_t i = 0; i < b->count; i++) {
        struct ovs_packet *pkt = b->packets[i];
        uint8_t buf[2048];
        uint32_t len;

        p->rx++;
        switch (marker(pkt)) {
        case 0xd1:
            b->verdicts[i] = OVS_PACKET_DROP;
            p->rx_dropped++;
            break;
        case 0xe5:
            host->packet_data_writable(pkt)[MARKER] = 0xe6;
            p->modified++;
            break;
        case 0xf7:
            len = host->packet_size(pkt);
            if (len + 100 <= sizeof buf) {
                memcpy(buf, host->packet_data(pkt), len);
                memset(buf + len, 0x55, 100);
                buf[MARKER] = 0xf8;
                b->packets[i] = host->packet_replace(pkt, buf, len + 100);
                p->replaced++;
            }
            break;
        case 0xc4:
            b->verdicts[i] = OVS_PACKET_TAKEN;
            host->packet_data_writable(pkt)[MARKER] = 0xc5;
            host->inject(p->name, OVS_PACKET_HOOK_RX, pkt);
            p->taken++;
            break;
        default:
            break;
        }
    }
}

static void
tx(void *ctx, int queue, struct ovs_packet_hook_batch *b)
{
    struct port *p = ctx;

    (void) queue;
    for (uint32_t i = 0; i < b->count; i++) {
        p->tx++;
        if (marker(b->packets[i]) == 0xd2) {
            b->verdicts[i] = OVS_PACKET_DROP;
            p->tx_dropped++;
        }
    }
}

static void
show(int argc, const char *argv[], void *aux, struct ovs_packet_hook_reply *reply)
{
    char out[4096];
    size_t n = 0;

    (void) argc;
    (void) argv;
    (void) aux;
    out[0] = '\0';
    for (struct port *p = ports; p && n < sizeof out - 200; p = p->next) {
        n += (size_t) snprintf(out + n, sizeof out - n,
                               "%s rx=%lu tx=%lu rx_dropped=%lu tx_dropped=%lu "
                               "modified=%lu replaced=%lu taken=%lu\n",
                               p->name, p->rx, p->tx, p->rx_dropped, p->tx_dropped,
                               p->modified, p->replaced, p->taken);
    }
    host->command_reply(reply, 1, out);
}

static void
inject(int argc, const char *argv[], void *aux, struct ovs_packet_hook_reply *reply)
{
    uint8_t buf[2048];
    size_t len = 0;
    const char *hex = argv[3];
    struct ovs_packet *pkt;
    int error;

    (void) argc;
    (void) aux;
    while (hex[0] && hex[1] && len < sizeof buf) {
        unsigned int byte;
        if (sscanf(hex, "%2x", &byte) != 1) {
            host->command_reply(reply, 0, "bad hex");
            return;
        }
        buf[len++] = (uint8_t) byte;
        hex += 2;
    }
    pkt = host->packet_new(buf, (uint32_t) len);
    if (!pkt) {
        host->command_reply(reply, 0, "bad length");
        return;
    }
    error = host->inject(argv[1], strcmp(argv[2], "tx") ? OVS_PACKET_HOOK_RX
                                                       : OVS_PACKET_HOOK_TX, pkt);
    host->command_reply(reply, !error, error ? "inject failed" : "");
}

static void
fini(void)
{
    host->log(OVS_PACKET_HOOK_LOG_INFO, "test hook: fini");
}

static const struct ovs_packet_hook_ops ops = {
    .size = sizeof(struct ovs_packet_hook_ops),
    .version = PLUGIN_ABI,
    .port_open = port_open,
    .port_close = port_close,
    .rx = rx,
    .tx = tx,
    .fini = fini,
};

const struct ovs_packet_hook_ops *
ovs_packet_hook_init(const struct ovs_packet_hook_host *h, const char *args,
                     char *err, size_t errlen)
{
    if (h->size < sizeof *h || h->version != PLUGIN_ABI) {
        snprintf(err, errlen, "host ABI %u, plugin ABI %d", h->version,
                 PLUGIN_ABI);
        return NULL;
    }
    if (args && !strcmp(args, "fail")) {
        snprintf(err, errlen, "asked to fail");
        return NULL;
    }
    host = h;
    h->register_command("test-hook/show", "", 0, 0, show, NULL);
    h->register_command("test-hook/inject", "PORT rx|tx HEX", 3, 3, inject, NULL);
    return &ops;
}
