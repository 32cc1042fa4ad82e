/*
 * rtpload: paced G.711 RTP load generator and receiver for media-relay benchmarks.
 *
 * Reads one stream per line (stdin or -f FILE):
 *
 *     SEND_IP SEND_PORT LOCAL_PORT
 *
 * Each stream sends a 172-byte RTP packet (PT 0, 160 bytes of PCMU payload, its own SSRC,
 * random initial sequence number and timestamp) every 20 ms to SEND_IP:SEND_PORT, and
 * receives on LOCAL_PORT. SEND_PORT 0 makes a receive-only stream. Streams are spread
 * evenly over the 20 ms period so the load is smooth rather than one burst per tick.
 *
 * By default each stream sends from its own receiving socket (symmetric RTP), which is
 * what a relay that latches onto the source address expects. With -s shared, all packets
 * leave from one socket in sendmmsg batches instead (for relays told the addresses by
 * signalling only, or loopback baselines).
 *
 * A packet is counted for the stream whose port received it. Per stream: RFC 3550
 * extended sequence numbers for loss, duplicates (a bitmap of seen sequence numbers) and
 * reordering (older than the highest seen), and the RFC 3550 interarrival jitter
 * J += (|D| - J) / 16, fed with kernel receive timestamps (SO_TIMESTAMPNS) so that the
 * generator's own wake-up latency is not charged to the relay.
 *
 * Sending stops after -d seconds; receiving goes on for -w milliseconds (drain) so packets
 * in flight are not counted as lost. One JSON object is printed on stdout; the lines
 * "rtpload: sending" and "rtpload: sent" on stderr mark the sending phase.
 *
 * Pacing: a wake-up is not free (in a VM each timer and each cross-CPU wake-up goes through
 * the hypervisor), so the loop sleeps at least -g microseconds (default 100), then sends
 * everything that has fallen due and reads everything that has arrived. Packets leave at
 * most about that late (reported as send_lag_ms); -g 0 wakes for every single packet, at
 * about twice the CPU cost at 100k packets/s.
 *
 * Figures: "lost" is sent minus unique received over all streams (exact when every stream
 * is received once, as through a relay); "seq_lost" sums the per-stream sequence gaps (RFC
 * 3550 A.3: blind to packets lost before the first or after the last one received).
 * "jitter_ms" is the distribution across streams (mean, p99, max) of each stream's jitter
 * averaged over the run (what its RTCP reports would show on average); "jitter_peak_ms"
 * the same for each stream's highest value. "send_lag_ms" p99 is capped at 20.01 (>= 20).
 * "cpu_s" is this process's own user and system time (getrusage).
 *
 * Build: gcc -O2 -o rtpload rtpload.c -lm  (Linux only: epoll, recvmmsg, sendmmsg)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PTIME_NS 20000000LL
#define SAMPLES_PER_PACKET 160
#define NS_PER_SAMPLE 125000LL /* 8 kHz */
#define PAYLOAD 160
#define HEADER 12
#define PACKET (HEADER + PAYLOAD)
#define RX_BATCH 8
#define TX_BATCH 64
#define MAX_EVENTS 512
#define MAX_STREAMS 65536
#define SEEN_MARGIN 4096 /* sequence numbers tolerated before the first one received */
#define MAX_SLEEP_NS 5000000LL /* poll the sockets at least every 5 ms */
#define LAG_BUCKETS 2001 /* send lag histogram, 10 us buckets up to 20 ms */

struct stream {
    int fd;
    uint16_t local_port;
    struct sockaddr_in dst;
    int sends;
    /* sender */
    uint32_t ssrc;
    uint16_t seq;
    uint32_t ts;
    uint64_t sent;
    /* receiver */
    int have_rx;
    uint32_t rx_ssrc;
    int64_t base_ext, max_ext;
    int64_t expected_before; /* from earlier SSRCs of this port */
    uint64_t received, duplicated, reordered;
    uint8_t *seen;
    int64_t seen_origin;
    int64_t prev_arrival_ns;
    uint32_t prev_ts;
    double jitter_ns, jitter_sum_ns, jitter_peak_ns;
    uint64_t jitter_samples;
};

static struct stream *streams;
static int nstreams;
static int64_t seen_bits;

static int64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t real_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "rtpload: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: rtpload -d SECONDS [-f STREAMS_FILE] [-b BIND_IP] [-w DRAIN_MS] "
            "[-s symmetric|shared] [-g GRANULARITY_US]\n"
            "streams (stdin by default): one 'SEND_IP SEND_PORT LOCAL_PORT' per line\n");
    exit(2);
}

static void raise_fd_limit(void) {
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
}

static int udp_socket(const char *bind_ip, uint16_t port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, bind_ip, &a.sin_addr) != 1) {
        fprintf(stderr, "rtpload: bad bind address %s\n", bind_ip);
        exit(2);
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        fprintf(stderr, "rtpload: bind %s:%u: %s\n", bind_ip, port, strerror(errno));
        exit(2);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    return fd;
}

static void read_streams(FILE *in) {
    int cap = 1024;
    streams = calloc(cap, sizeof *streams);
    char line[256];
    while (fgets(line, sizeof line, in)) {
        char ip[64];
        unsigned send_port, local_port;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%63s %u %u", ip, &send_port, &local_port) != 3 || send_port > 65535 ||
            local_port == 0 || local_port > 65535) {
            fprintf(stderr, "rtpload: bad stream line: %s", line);
            exit(2);
        }
        if (nstreams == MAX_STREAMS) {
            fprintf(stderr, "rtpload: more than %d streams\n", MAX_STREAMS);
            exit(2);
        }
        if (nstreams == cap) {
            cap *= 2;
            streams = realloc(streams, cap * sizeof *streams);
            memset(streams + nstreams, 0, (cap - nstreams) * sizeof *streams);
        }
        struct stream *s = &streams[nstreams++];
        s->local_port = (uint16_t)local_port;
        s->sends = send_port != 0;
        s->dst.sin_family = AF_INET;
        s->dst.sin_port = htons((uint16_t)send_port);
        if (inet_pton(AF_INET, ip, &s->dst.sin_addr) != 1) {
            fprintf(stderr, "rtpload: bad address %s\n", ip);
            exit(2);
        }
    }
    if (nstreams == 0) {
        fprintf(stderr, "rtpload: no streams\n");
        exit(2);
    }
}

static void init_sender(struct stream *s, int index) {
    uint32_t r[3];
    if (getrandom(r, sizeof r, 0) != sizeof r)
        die("getrandom");
    s->ssrc = (r[0] & 0xFFFF0000u) | (uint32_t)index; /* unique among our streams */
    s->seq = (uint16_t)r[1];
    s->ts = r[2];
}

static void write_packet(uint8_t *p, struct stream *s) {
    p[0] = 0x80;
    p[1] = s->sent == 0 ? 0x80 : 0x00; /* marker on the first packet, PT 0 (PCMU) */
    p[2] = (uint8_t)(s->seq >> 8);
    p[3] = (uint8_t)s->seq;
    p[4] = (uint8_t)(s->ts >> 24);
    p[5] = (uint8_t)(s->ts >> 16);
    p[6] = (uint8_t)(s->ts >> 8);
    p[7] = (uint8_t)s->ts;
    p[8] = (uint8_t)(s->ssrc >> 24);
    p[9] = (uint8_t)(s->ssrc >> 16);
    p[10] = (uint8_t)(s->ssrc >> 8);
    p[11] = (uint8_t)s->ssrc;
    memset(p + HEADER, 0xFF, PAYLOAD); /* PCMU silence */
    s->seq++;
    s->ts += SAMPLES_PER_PACKET;
    s->sent++;
}

/* ---- receiving ------------------------------------------------------------------- */

static uint64_t foreign; /* datagrams that are not RTP */

static void rx_restart(struct stream *s, uint32_t ssrc, uint16_t seq) {
    if (s->have_rx)
        s->expected_before += s->max_ext - s->base_ext + 1;
    s->have_rx = 1;
    s->rx_ssrc = ssrc;
    s->base_ext = s->max_ext = (int64_t)seq + 65536; /* room for packets just before it */
    s->seen_origin = s->base_ext - SEEN_MARGIN;
    memset(s->seen, 0, (size_t)(seen_bits + 7) / 8);
    s->prev_arrival_ns = 0;
    s->jitter_ns = 0;
}

static void rx_packet(struct stream *s, const uint8_t *p, ssize_t len, int64_t arrival_ns) {
    if (len < HEADER || (p[0] >> 6) != 2) {
        foreign++;
        return;
    }
    uint16_t seq = (uint16_t)(p[2] << 8 | p[3]);
    uint32_t ts = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    uint32_t ssrc = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
    if (!s->have_rx || ssrc != s->rx_ssrc)
        rx_restart(s, ssrc, seq);
    int64_t ext = s->max_ext + (int16_t)(uint16_t)(seq - (uint16_t)s->max_ext);
    int64_t bit = ext - s->seen_origin;
    if (bit >= 0 && bit < seen_bits) {
        uint8_t mask = (uint8_t)(1u << (bit & 7));
        if (s->seen[bit >> 3] & mask) {
            s->duplicated++;
            return;
        }
        s->seen[bit >> 3] |= mask;
    }
    s->received++;
    if (ext > s->max_ext)
        s->max_ext = ext;
    else if (ext < s->max_ext)
        s->reordered++;
    if (ext < s->base_ext)
        s->base_ext = ext;
    if (s->prev_arrival_ns != 0) {
        double d = (double)(arrival_ns - s->prev_arrival_ns) -
                   (double)(int32_t)(ts - s->prev_ts) * (double)NS_PER_SAMPLE;
        s->jitter_ns += (fabs(d) - s->jitter_ns) / 16.0;
        s->jitter_sum_ns += s->jitter_ns;
        s->jitter_samples++;
        if (s->jitter_ns > s->jitter_peak_ns)
            s->jitter_peak_ns = s->jitter_ns;
    }
    s->prev_arrival_ns = arrival_ns;
    s->prev_ts = ts;
}

static struct mmsghdr rx_msgs[RX_BATCH];
static struct iovec rx_iov[RX_BATCH];
static uint8_t rx_buf[RX_BATCH][2048];
static char rx_ctrl[RX_BATCH][CMSG_SPACE(sizeof(struct timespec))];

static void rx_drain(struct stream *s) {
    for (;;) {
        for (int i = 0; i < RX_BATCH; i++) {
            rx_msgs[i].msg_hdr.msg_controllen = sizeof rx_ctrl[i];
            rx_msgs[i].msg_hdr.msg_flags = 0;
        }
        int n = recvmmsg(s->fd, rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        int64_t fallback = 0;
        for (int i = 0; i < n; i++) {
            int64_t when = 0;
            struct msghdr *h = &rx_msgs[i].msg_hdr;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec t;
                    memcpy(&t, CMSG_DATA(c), sizeof t);
                    when = (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
                }
            }
            if (when == 0) {
                if (fallback == 0)
                    fallback = real_ns();
                when = fallback;
            }
            rx_packet(s, rx_buf[i], (ssize_t)rx_msgs[i].msg_len, when);
        }
        if (n < RX_BATCH)
            return; /* level-triggered epoll reports the socket again if more came */
    }
}

/* Receiving by polling rather than sleeping on the sockets: the arrival times are the
 * kernel's, so reading a packet a little later changes no figure, while waiting in epoll
 * would wake the tool for every single packet (100k wake-ups/s at full load, each one an
 * inter-processor interrupt, which in a VM is a hypervisor exit). */
static void rx_poll(int ep, struct epoll_event *events) {
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++)
            rx_drain(&streams[events[i].data.u32]);
        if (n < MAX_EVENTS)
            return;
    }
}

/* ---- sending --------------------------------------------------------------------- */

static int shared_fd = -1;
static struct mmsghdr tx_msgs[TX_BATCH];
static struct iovec tx_iov[TX_BATCH];
static uint8_t tx_buf[TX_BATCH][PACKET];
static int tx_count;
static uint64_t send_errors, sent_total;

static void tx_flush(void) {
    int done = 0;
    while (done < tx_count) {
        int n = sendmmsg(shared_fd, tx_msgs + done, tx_count - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            send_errors++; /* the first message failed: count it and go on with the rest */
            n = 1;
        } else {
            sent_total += (uint64_t)n;
        }
        done += n;
    }
    tx_count = 0;
}

static void send_one(struct stream *s) {
    if (shared_fd >= 0) {
        write_packet(tx_buf[tx_count], s);
        tx_msgs[tx_count].msg_hdr.msg_name = &s->dst;
        tx_count++;
        if (tx_count == TX_BATCH)
            tx_flush();
        return;
    }
    uint8_t p[PACKET];
    write_packet(p, s);
    if (sendto(s->fd, p, PACKET, 0, (struct sockaddr *)&s->dst, sizeof s->dst) == PACKET)
        sent_total++;
    else
        send_errors++;
}

/* ---- statistics ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* mean, p99 and max of values[0..n) (sorted in place), printed in milliseconds */
static void print_dist(const char *name, double *values, int n, double scale) {
    if (n == 0) {
        printf("\"%s\":{\"mean\":null,\"p99\":null,\"max\":null}", name);
        return;
    }
    qsort(values, (size_t)n, sizeof *values, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += values[i];
    int k = (int)ceil(0.99 * n) - 1;
    if (k < 0)
        k = 0;
    printf("\"%s\":{\"mean\":%.4f,\"p99\":%.4f,\"max\":%.4f}", name, sum / n * scale,
           values[k] * scale, values[n - 1] * scale);
}

static double hist_quantile(const uint64_t *h, int buckets, uint64_t total, double q) {
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)total), acc = 0;
    for (int i = 0; i < buckets; i++) {
        acc += h[i];
        if (acc >= want)
            return (i + 1) * 0.01; /* bucket upper edge, ms */
    }
    return buckets * 0.01;
}

int main(int argc, char **argv) {
    double seconds = 0;
    const char *file = NULL, *bind_ip = "127.0.0.1", *mode = "symmetric";
    int drain_ms = 300, granularity_us = 100, opt;
    while ((opt = getopt(argc, argv, "d:f:b:w:s:g:h")) != -1) {
        switch (opt) {
        case 'd': seconds = atof(optarg); break;
        case 'f': file = optarg; break;
        case 'b': bind_ip = optarg; break;
        case 'w': drain_ms = atoi(optarg); break;
        case 's': mode = optarg; break;
        case 'g': granularity_us = atoi(optarg); break;
        default: usage();
        }
    }
    if (seconds <= 0 || seconds > 1200 || drain_ms < 0 || drain_ms > 10000 ||
        granularity_us < 0 || granularity_us > 5000)
        usage();
    int64_t granularity_ns = (int64_t)granularity_us * 1000;
    int shared = strcmp(mode, "shared") == 0;
    if (!shared && strcmp(mode, "symmetric") != 0)
        usage();

    FILE *in = stdin;
    if (file && !(in = fopen(file, "r")))
        die(file);
    read_streams(in);
    raise_fd_limit();
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake up on time, not up to 50 us late */

    int64_t per_stream = (int64_t)(seconds * 1e9 / PTIME_NS) + 2;
    seen_bits = per_stream + 2 * SEEN_MARGIN;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nstreams; i++) {
        struct stream *s = &streams[i];
        s->fd = udp_socket(bind_ip, s->local_port);
        s->seen = calloc((size_t)(seen_bits + 7) / 8, 1);
        if (!s->seen)
            die("calloc");
        init_sender(s, i);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0)
            die("epoll_ctl");
    }
    if (shared) {
        shared_fd = udp_socket(bind_ip, 0);
        int size = 4 << 20;
        setsockopt(shared_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    for (int i = 0; i < RX_BATCH; i++) {
        rx_iov[i] = (struct iovec){.iov_base = rx_buf[i], .iov_len = sizeof rx_buf[i]};
        rx_msgs[i].msg_hdr = (struct msghdr){.msg_iov = &rx_iov[i], .msg_iovlen = 1,
                                             .msg_control = rx_ctrl[i]};
    }
    for (int i = 0; i < TX_BATCH; i++) {
        tx_iov[i] = (struct iovec){.iov_base = tx_buf[i], .iov_len = PACKET};
        tx_msgs[i].msg_hdr = (struct msghdr){.msg_iov = &tx_iov[i], .msg_iovlen = 1,
                                             .msg_namelen = sizeof(struct sockaddr_in)};
    }

    /* Senders in index order, each period: stream i is due at t0 + k*P + i*P/n. */
    int senders = 0;
    int *order = malloc(sizeof(int) * (size_t)nstreams);
    for (int i = 0; i < nstreams; i++)
        if (streams[i].sends)
            order[senders++] = i;
    static uint64_t lag_hist[LAG_BUCKETS];
    double lag_max_ns = 0, lag_sum_ns = 0;
    uint64_t lag_n = 0;

    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    /* Progress lines let a wrapper measure a relay's CPU over exactly the sending phase. */
    fprintf(stderr, "rtpload: sending\n");
    fflush(stderr);
    int64_t t0 = mono_ns() + 20000000LL;
    int64_t send_end = t0 + (int64_t)(seconds * 1e9);
    int64_t stop = send_end + (int64_t)drain_ms * 1000000LL;
    int64_t period = 0;
    int next = 0;
    int sending = senders > 0;
    struct epoll_event events[MAX_EVENTS];

    for (;;) {
        int64_t now = mono_ns();
        int64_t due = 0;
        while (sending) {
            due = t0 + period * PTIME_NS + (int64_t)next * PTIME_NS / senders;
            if (due >= send_end) {
                sending = 0;
                fprintf(stderr, "rtpload: sent\n");
                fflush(stderr);
                break;
            }
            if (due > now)
                break;
            double lag = (double)(now - due);
            lag_sum_ns += lag;
            lag_n++;
            if (lag > lag_max_ns)
                lag_max_ns = lag;
            int b = (int)(lag / 10000.0);
            lag_hist[b < LAG_BUCKETS ? b : LAG_BUCKETS - 1]++;
            send_one(&streams[order[next]]);
            if (++next == senders) {
                next = 0;
                period++;
            }
        }
        if (tx_count)
            tx_flush();
        now = mono_ns();
        if (!sending && now >= stop)
            break;
        int64_t wake = sending ? due : stop;
        if (wake < now + granularity_ns)
            wake = now + granularity_ns;
        if (wake > now + MAX_SLEEP_NS)
            wake = now + MAX_SLEEP_NS;
        struct timespec t = {.tv_sec = wake / 1000000000LL, .tv_nsec = wake % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
            ;
        rx_poll(ep, events);
    }
    int64_t wall_end = mono_ns();
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);

    /* ---- report ---- */
    uint64_t received = 0, duplicated = 0, reordered = 0;
    int64_t seq_expected = 0;
    int silent = 0, receivers = 0;
    double *jit = malloc(sizeof(double) * (size_t)nstreams);
    double *peak = malloc(sizeof(double) * (size_t)nstreams);
    for (int i = 0; i < nstreams; i++) {
        struct stream *s = &streams[i];
        received += s->received;
        duplicated += s->duplicated;
        reordered += s->reordered;
        if (!s->have_rx) {
            silent++;
            continue;
        }
        seq_expected += s->expected_before + s->max_ext - s->base_ext + 1;
        if (s->jitter_samples) {
            jit[receivers] = s->jitter_sum_ns / (double)s->jitter_samples;
            peak[receivers] = s->jitter_peak_ns;
            receivers++;
        }
    }
    int64_t lost = (int64_t)sent_total - (int64_t)received;
    if (lost < 0)
        lost = 0;
    int64_t seq_lost = seq_expected - (int64_t)received;
    if (seq_lost < 0)
        seq_lost = 0;
    double user = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                  (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
    double sys = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double wall = (double)(wall_end - t0) / 1e9;
    double sent_seconds = (double)(send_end - t0) / 1e9;

    printf("{\"streams\":%d,\"senders\":%d,\"mode\":\"%s\",\"seconds\":%.3f,\"drain_ms\":%d,"
           "\"granularity_us\":%d,",
           nstreams, senders, mode, sent_seconds, drain_ms, granularity_us);
    printf("\"packets_per_s\":%.1f,", (double)sent_total / sent_seconds);
    printf("\"sent\":%llu,\"send_errors\":%llu,\"received\":%llu,\"duplicated\":%llu,"
           "\"reordered\":%llu,\"foreign\":%llu,",
           (unsigned long long)sent_total, (unsigned long long)send_errors,
           (unsigned long long)received, (unsigned long long)duplicated,
           (unsigned long long)reordered, (unsigned long long)foreign);
    printf("\"lost\":%lld,\"lost_pct\":%.4f,\"seq_lost\":%lld,\"seq_lost_pct\":%.4f,"
           "\"silent_streams\":%d,",
           (long long)lost, sent_total ? 100.0 * (double)lost / (double)sent_total : 0.0,
           (long long)seq_lost,
           seq_expected ? 100.0 * (double)seq_lost / (double)seq_expected : 0.0, silent);
    print_dist("jitter_ms", jit, receivers, 1e-6);
    printf(",");
    print_dist("jitter_peak_ms", peak, receivers, 1e-6);
    printf(",\"send_lag_ms\":{\"mean\":%.4f,\"p99\":%.4f,\"max\":%.4f},",
           lag_n ? lag_sum_ns / (double)lag_n * 1e-6 : 0.0,
           hist_quantile(lag_hist, LAG_BUCKETS, lag_n, 0.99), lag_max_ns * 1e-6);
    printf("\"cpu_s\":{\"user\":%.3f,\"sys\":%.3f,\"total\":%.3f},\"cpu_pct\":%.1f}\n", user,
           sys, user + sys, wall > 0 ? 100.0 * (user + sys) / wall : 0.0);
    return 0;
}
