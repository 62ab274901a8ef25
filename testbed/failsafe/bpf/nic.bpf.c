// The fail-safe NIC's kernel data path: a cls_bpf (direct-action) program on ingress of nic-h and nic-n.
//
// It does, in the kernel, exactly what testbed/failsafe/pipeline.py (the reference) does for the frames
// that change no control-plane state: VLAN pass-through, plain forwarding, critical TCP in normal mode,
// established NAT flows both ways (the same RFC 1624 arithmetic as packet.apply_rewrite, so the bytes
// are identical), ARP requests for the NIC's own IP from a known sender, and the same counters. Every
// other frame (SYNs and UDP requests to mirror, replies to mark answered, heartbeat replies, ARP that
// teaches something, new NAT flows, malformed frames) is redirected to a punt veth, where the Python
// pipeline handles it as it would have anyway. Maps are filled by testbed/failsafe/bpf_datapath.py.
// With `carry` (the NIC's carry_tcp, testbed/failsafe/tcp_carry.py), the control plane follows every
// critical TCP connection: the client's data, FIN and RST segments and the host's data and FIN segments
// are forwarded with a copy (no shortcut), except for the data of flows in `nocopy` (bulk transfers it
// gave up on: only their FIN and RST are copied, so that it forgets them);
// connections carried to a backup have an entry without MACs in `conns` (its reply side none, its
// host side one), so all their frames punt.
// The replay store (FailsafeHandler's pending requests) is kept here, not in userspace: each critical UDP
// request and TCP SYN forwarded to the host in normal mode is stored in its flow's ring in `pend` (the
// last PEND_SLOTS unanswered ones; the frame in `pslots`), with the same age and per-flow bounds as the
// reference, and each reply from the host on the flow (UDP, SYN-ACK) answers the oldest one; the control
// plane reads the rings only at failover (testbed/failsafe/bpf_pending.py), so no request wakes it.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define HOST 0
#define NET 1
#define MAX_SERVICES 64
// counters (u64, per CPU): ports, reasons, then 6 per service
#define C_RX_P(p) ((p) * 4 + 0)
#define C_RX_B(p) ((p) * 4 + 1)
#define C_TX_P(p) ((p) * 4 + 2)
#define C_TX_B(p) ((p) * 4 + 3)
#define C_VLAN 8
#define C_NON_IP 9
#define C_CRITICAL 10
#define C_TO_BACKUP 11
#define C_FROM_BACKUP 12
#define C_ARP_ANSWERED 13
#define C_PUNT_HOST 14
#define C_PUNT_NET 15
#define C_REPLY 16
#define C_MIRRORED 17
#define C_P_MIRRORED 18 // the replay store (FailsafeHandler.stats): requests kept
#define C_P_ANSWERED 19
#define C_P_EXPIRED 20
#define C_P_OVERFLOW 21 // dropped by the per-flow bound (or longer than PEND_BYTES)
#define C_P_EVICTED 22  // not kept: no room for another flow in `pend`
// the tag (VLAN id, as metadata) that tells userspace why a frame reached the punt veth
#define TAG_PUNT_HOST 1
#define TAG_PUNT_NET 2
#define TAG_REQUEST 3 // a critical request forwarded to the host: keep a copy for replay
#define TAG_REPLY 4   // a critical reply forwarded to the network: its request is answered
#define C_SVC(s, f) (32 + (s) * 6 + (f))
#define NCOUNTERS (32 + MAX_SERVICES * 6)
#define S_PACKETS 0
#define S_BYTES 1
#define S_TO_HOST 2
#define S_TO_BACKUP 3
#define S_FROM_BACKUP 4

#define PEND_SLOTS 64 // requests kept per flow (a power of two): its last PEND_SLOTS unanswered ones
#define PEND_MASK (PEND_SLOTS - 1)
#define PEND_BYTES 1536 // longest request frame kept (an untagged frame of MTU 1500 is 1514)
#define PEND_FLOWS 4096 // flows with a ring
#define PEND_TOTAL 4096 // frames kept in all (least recently stored go first)

#define MODE_FAILSAFE 1
#define MODE_COUNTED 2 // the pipeline already has counters for this service

struct cfg {
    __u32 enabled;
    __u32 ifindex[2];      // nic-h, nic-n
    __u32 punt_ifindex;    // the punt veth: frames for userspace, tagged with why
    __u32 copy_ifindex;    // the copy veth: copies of forwarded requests and replies (read in batches)
    __u8 nic_ip[4];
    __u8 host_ip[4];
    __u8 nic_mac[6];
    __u8 host_mac[6];
    __u32 host_mac_known;
    __u32 nconns; // len(conntrack) in the reference
    __u32 carry;  // 1: copy critical TCP for tcp_carry (pipeline.carry is set)
    __u32 pend_cap; // the per-flow bound (pending_per_flow, at most PEND_SLOTS)
    __u64 pend_age_ns; // pending_max_age_s
    __u32 host_peer;   // 1: nic-h's veth peer is the host's interface, in another namespace
};

struct target_key { __u8 ip[4]; __u8 proto; __u8 pad; __u8 port[2]; };
struct flow { __u8 proto; __u8 pad[3]; __u8 l3l4[12]; }; // frame[23] and frame[26:38]
struct nat {
    __u8 l3l4[12];
    __u8 macs[12]; // destination + source MAC to write
    __u32 ip_delta;
    __u32 l4_delta;
    __u32 service;
    __u32 to_client; // 1: a reply rewritten towards the client
    __u64 last_seen_ns;
    __u64 packets;
    __u32 replied;
    __u32 assured;
};
struct neigh { __u8 mac[6]; __u8 any; __u8 pad; };
// a flow's ring of pending requests: sequence numbers head..tail-1, each stored at `ts`, frame in pslots
struct pq { struct bpf_spin_lock lock; __u32 head; __u32 tail; __u32 pad; __u64 ts[PEND_SLOTS]; };
struct pq_init { __u32 pad[4]; __u64 ts[PEND_SLOTS]; }; // a new ring (struct pq's size, no lock: helpers may read it)
struct pslot_key { struct flow f; __u32 slot; };
struct pslot { __u64 ts; __u32 seq; __u32 sid; __u32 len; __u32 pad; __u8 data[PEND_BYTES]; };

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct cfg); } cfg SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024); __type(key, __u32); __type(value, __u32); } watch SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024); __type(key, struct target_key); __type(value, __u32); } targets SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MAX_SERVICES); __type(key, __u32); __type(value, __u32); } mode SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 32768); __type(key, struct flow); __type(value, struct nat); } conns SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 2048); __type(key, __u32); __type(value, struct neigh); } neigh SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16384); __type(key, struct flow); __type(value, __u32); } nocopy SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, PEND_FLOWS); __type(key, struct flow); __type(value, struct pq); } pend SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, PEND_TOTAL); __type(key, struct pslot_key); __type(value, struct pslot); } pslots SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct pq_init); } pzero SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct pslot); } pscratch SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, NCOUNTERS); __type(key, __u32); __type(value, __u64); } counters SEC(".maps");

static __always_inline void count(__u32 idx, __u64 n)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &idx);
    if (c)
        *c += n;
}

static __always_inline int eq4(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline int eq6(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline __u32 fold(__u32 old, __u32 delta)
{
    __u32 t = (~old & 0xFFFF) + delta;
    t = (t & 0xFFFF) + (t >> 16);
    return ~((t & 0xFFFF) + (t >> 16)) & 0xFFFF;
}

static __always_inline int punt(struct __sk_buff *skb, struct cfg *c, int in)
{
    count(in == HOST ? C_PUNT_HOST : C_PUNT_NET, 1);
    if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), in == HOST ? TAG_PUNT_HOST : TAG_PUNT_NET))
        return TC_ACT_SHOT;
    return bpf_redirect(c->punt_ifindex, 0);
}

// Send out `port`. A frame for the host's MAC goes straight into the receive path of nic-h's peer
// (bpf_redirect_peer: no veth transmit and second backlog pass, as a bridge or bpf_redirect take) when
// that peer is the host's own interface, in another namespace (cfg.host_peer; not the link emulator's end of
// an emulated access link), typed PACKET_HOST as the host's eth_type_trans would have typed it. Everything
// else is transmitted on the port as before.
static __always_inline int tx(struct __sk_buff *skb, struct cfg *c, int port)
{
    if (port == HOST && c->host_peer && c->host_mac_known && !skb->vlan_present) {
        void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
        if (data + 6 <= end && eq6(data, c->host_mac)) {
            bpf_skb_change_type(skb, 0); // PACKET_HOST (kernels from 6.15 set it themselves)
            return bpf_redirect_peer(c->ifindex[HOST], 0);
        }
    }
    return bpf_redirect(c->ifindex[port & 1], 0);
}

// Forward out `port` and give userspace a tagged copy (packet pointers are invalid afterwards).
static __always_inline int out_copy(struct __sk_buff *skb, struct cfg *c, int port, __u32 len, __u16 tag)
{
    if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), tag) == 0) {
        if (bpf_clone_redirect(skb, c->copy_ifindex, 0) == 0)
            count(C_MIRRORED, 1);
        bpf_skb_vlan_pop(skb);
    }
    count(C_TX_P(port), 1);
    count(C_TX_B(port), len);
    return tx(skb, c, port);
}

static __always_inline int out(struct __sk_buff *skb, struct cfg *c, int port, __u32 len)
{
    count(C_TX_P(port), 1);
    count(C_TX_B(port), len);
    return tx(skb, c, port);
}

// Keep critical request `k` (the frame's first `len` bytes) in its flow's ring, as FailsafeHandler.mirror_key.
static __always_inline void pend_push(struct __sk_buff *skb, struct cfg *c, struct flow *k, __u32 sid, __u32 len)
{
    __u32 zero = 0;
    if (len == 0 || len > PEND_BYTES) {
        count(C_P_OVERFLOW, 1);
        return;
    }
    struct pq *q = bpf_map_lookup_elem(&pend, k);
    if (!q) {
        struct pq_init *z = bpf_map_lookup_elem(&pzero, &zero);
        if (!z)
            return;
        bpf_map_update_elem(&pend, k, z, BPF_NOEXIST);
        q = bpf_map_lookup_elem(&pend, k);
        if (!q) {
            count(C_P_EVICTED, 1);
            return;
        }
    }
    __u64 now = bpf_ktime_get_ns(), age = c->pend_age_ns;
    __u32 cap = c->pend_cap, expired = 0, overflow = 0, idx;
    if (cap == 0 || cap > PEND_SLOTS)
        cap = PEND_SLOTS;
    bpf_spin_lock(&q->lock);
    for (int i = 0; i < PEND_SLOTS; i++) { // the flow's requests older than the window go first
        if (q->head == q->tail || now - q->ts[q->head & PEND_MASK] <= age)
            break;
        q->head++;
        expired++;
    }
    for (int i = 0; i < PEND_SLOTS; i++) { // then the oldest beyond the per-flow bound
        if (q->tail - q->head < cap)
            break;
        q->head++;
        overflow++;
    }
    idx = q->tail++;
    q->ts[idx & PEND_MASK] = now;
    bpf_spin_unlock(&q->lock);
    if (expired)
        count(C_P_EXPIRED, expired);
    if (overflow)
        count(C_P_OVERFLOW, overflow);
    struct pslot_key sk = {};
    __builtin_memcpy(&sk.f, k, sizeof(sk.f));
    sk.slot = idx & PEND_MASK;
    struct pslot *s = bpf_map_lookup_elem(&pslots, &sk);
    int fresh = !s;
    if (fresh) {
        s = bpf_map_lookup_elem(&pscratch, &zero);
        if (!s)
            return;
    }
    __u32 n = len;
    asm volatile("" : "+r"(n)); // the verifier sees the bound right where the copy needs it
    if (n == 0 || n > PEND_BYTES)
        return;
    s->ts = now;
    s->sid = sid;
    s->len = n;
    if (bpf_skb_load_bytes(skb, 0, s->data, n))
        return;
    s->seq = idx; // last: the control plane takes a slot only when its sequence number is the one expected
    if (fresh)
        bpf_map_update_elem(&pslots, &sk, s, BPF_ANY);
    count(C_P_MIRRORED, 1);
}

// A reply from the host on request flow `k`: its oldest pending request is answered (FailsafeHandler.answered_key).
static __always_inline void pend_pop(struct flow *k)
{
    struct pq *q = bpf_map_lookup_elem(&pend, k);
    if (!q)
        return;
    int hit = 0;
    bpf_spin_lock(&q->lock);
    if (q->head != q->tail) {
        q->head++;
        hit = 1;
    }
    bpf_spin_unlock(&q->lock);
    if (hit)
        count(C_P_ANSWERED, 1);
}

static __always_inline __u32 *service_of(__u8 *ip, __u8 proto, __u8 *port)
{
    struct target_key k = {};
    __builtin_memcpy(k.ip, ip, 4);
    k.proto = proto;
    k.port[0] = port[0];
    k.port[1] = port[1];
    return bpf_map_lookup_elem(&targets, &k);
}

static __always_inline __u32 mode_of(__u32 sid)
{
    __u32 *m = bpf_map_lookup_elem(&mode, &sid);
    return m ? *m : 0;
}

// A NAT rewrite as packet.apply_rewrite does it (frame untagged, IHL 5; l4 checksum at `at`).
static __always_inline int rewrite(struct __sk_buff *skb, struct nat *n, int at, int udp)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u8 *f = data;
    if (data + 42 > end)
        return -1;
    __builtin_memcpy(f, n->macs, 12);
    __builtin_memcpy(f + 26, n->l3l4, 12);
    __u32 ipc = fold(((__u32)f[24] << 8) | f[25], n->ip_delta);
    f[24] = ipc >> 8;
    f[25] = ipc & 0xFF;
    if (udp) {
        __u32 old = ((__u32)f[40] << 8) | f[41];
        if (old == 0)
            return 0;
        __u32 t = fold(old, n->l4_delta);
        if (t == 0)
            t = 0xFFFF;
        f[40] = t >> 8;
        f[41] = t & 0xFF;
        return 0;
    }
    if (data + 54 > end)
        return -1;
    __u32 t = fold(((__u32)f[50] << 8) | f[51], n->l4_delta);
    f[50] = t >> 8;
    f[51] = t & 0xFF;
    return 0;
}

// ARP request for the NIC's own IP whose sender teaches the reference nothing new: answer it here.
static __always_inline int arp(struct __sk_buff *skb, struct cfg *c, int in, __u32 len)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u8 *f = data;
    if (data + 42 > end)
        return punt(skb, c, in);
    static const __u8 hdr[8] = {0, 1, 8, 0, 6, 4, 0, 1};
    for (int i = 0; i < 8; i++)
        if (f[14 + i] != hdr[i])
            return punt(skb, c, in);
    __u8 *sha = f + 22, *spa = f + 28, *tpa = f + 38;
    if (!eq4(tpa, c->nic_ip) || eq4(spa, c->nic_ip) || (spa[0] | spa[1] | spa[2] | spa[3]) == 0)
        return punt(skb, c, in);
    if (eq4(spa, c->host_ip)) {
        if (in == HOST && !(c->host_mac_known && eq6(sha, c->host_mac)))
            return punt(skb, c, in);
    } else {
        __u32 ip;
        __builtin_memcpy(&ip, spa, 4);
        struct neigh *nb = bpf_map_lookup_elem(&neigh, &ip);
        if (!nb || (!nb->any && !eq6(sha, nb->mac)))
            return punt(skb, c, in);
    }
    __u8 req_mac[6], req_ip[4];
    __builtin_memcpy(req_mac, sha, 6);
    __builtin_memcpy(req_ip, spa, 4);
    if (len != 42) {
        if (bpf_skb_change_tail(skb, 42, 0))
            return TC_ACT_SHOT;
        data = (void *)(long)skb->data;
        end = (void *)(long)skb->data_end;
        f = data;
        if (data + 42 > end)
            return TC_ACT_SHOT;
    }
    __builtin_memcpy(f, req_mac, 6);
    __builtin_memcpy(f + 6, c->nic_mac, 6);
    f[21] = 2;
    __builtin_memcpy(f + 22, c->nic_mac, 6);
    __builtin_memcpy(f + 28, c->nic_ip, 4);
    __builtin_memcpy(f + 32, req_mac, 6);
    __builtin_memcpy(f + 38, req_ip, 4);
    count(C_RX_P(in), 1);
    count(C_RX_B(in), len);
    count(C_ARP_ANSWERED, 1);
    return out(skb, c, in, 42);
}

SEC("tc")
int nic_ingress(struct __sk_buff *skb)
{
    __u32 zero = 0;
    struct cfg *c = bpf_map_lookup_elem(&cfg, &zero);
    if (!c || !c->enabled)
        return TC_ACT_OK;
    int in = skb->ifindex == c->ifindex[HOST] ? HOST : NET;
    int other = in == HOST ? NET : HOST;
    __u32 len = skb->len;

    if (skb->vlan_present) { // the kernel took the tag off; it goes back on at transmit
        count(C_RX_P(in), 1);
        count(C_RX_B(in), len + 4);
        count(C_VLAN, 1);
        return out(skb, c, other, len + 4);
    }
    if (len < 14)
        return punt(skb, c, in);
    if (skb->data_end - skb->data < (len < 54 ? len : 54))
        bpf_skb_pull_data(skb, len < 54 ? len : 54);
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u8 *f = data;
    if (data + 14 > end)
        return punt(skb, c, in);
    __u16 etype = ((__u16)f[12] << 8) | f[13];
    if (etype == 0x0806) {
        return arp(skb, c, in, len);
    }
    if (etype == 0x8100 || etype == 0x88A8) {
        count(C_RX_P(in), 1);
        count(C_RX_B(in), len);
        count(C_VLAN, 1);
        return out(skb, c, other, len);
    }
    if (etype != 0x0800) {
        if (len < 34)
            return punt(skb, c, in);
        count(C_RX_P(in), 1);
        count(C_RX_B(in), len);
        count(C_NON_IP, 1);
        return out(skb, c, other, len);
    }
    if (len < 34 || data + 34 > end)
        return punt(skb, c, in);
    __u8 *src = f + 26, *dst = f + 30;
    int plain = f[14] == 0x45 && !(f[20] & 0x3F) && !f[21];
    __u8 proto = f[23];

    if (in == NET) {
        __u32 d;
        __builtin_memcpy(&d, dst, 4);
        if (!bpf_map_lookup_elem(&watch, &d))
            goto forward;
        if (!plain || len < 42 || (len >= 54 && data + 54 > end))
            return punt(skb, c, in);
        if (data + 42 > end)
            return punt(skb, c, in);
        __u32 total = ((__u32)f[16] << 8) | f[17];
        int tcp = proto == 6, udp = proto == 17;
        __u8 flags = 0;
        __u32 doff = 0;
        if (tcp) {
            if (len < 54 || data + 54 > end)
                return punt(skb, c, in);
            flags = f[47];
            doff = (f[46] >> 4) * 4;
            if (total + 14 > len || doff < 20 || doff + 20 > total)
                return punt(skb, c, in);
        } else if (udp) {
            if (total + 14 > len || total < 28)
                return punt(skb, c, in);
        } else {
            if (eq4(dst, c->nic_ip))
                return punt(skb, c, in);
            if (!service_of(dst, proto, f + 36))
                goto forward;
            return punt(skb, c, in);
        }
        struct flow k = {};
        k.proto = proto;
        __builtin_memcpy(k.l3l4, f + 26, 12);
        if (eq4(dst, c->nic_ip)) { // a backup's reply to a NAT port
            if (tcp && (flags & 0x07))
                return punt(skb, c, in);
            struct nat *n = bpf_map_lookup_elem(&conns, &k);
            if (!n || !n->to_client)
                return punt(skb, c, in);
            n->last_seen_ns = bpf_ktime_get_ns();
            n->replied = 1;
            __sync_fetch_and_add(&n->packets, 1);
            __u32 sid = n->service;
            if (rewrite(skb, n, tcp ? 50 : 40, udp))
                return punt(skb, c, in);
            count(C_RX_P(in), 1);
            count(C_RX_B(in), len);
            if (sid < MAX_SERVICES && (mode_of(sid) & MODE_COUNTED))
                count(C_SVC(sid, S_FROM_BACKUP), 1);
            count(C_FROM_BACKUP, 1);
            return out(skb, c, NET, len);
        }
        __u32 *sidp = service_of(dst, proto, f + 36);
        if (!sidp)
            goto forward;
        __u32 sid = *sidp;
        if (sid >= MAX_SERVICES)
            return punt(skb, c, in);
        __u32 m = mode_of(sid);
        if (!(m & MODE_COUNTED))
            return punt(skb, c, in);
        if (tcp && !(flags & 0x02) && !(m & MODE_FAILSAFE) && c->nconns == 0 && !c->carry) {
            count(C_RX_P(in), 1); // pipeline.forward's shortcut: no reason noted
            count(C_RX_B(in), len);
            count(C_SVC(sid, S_PACKETS), 1);
            count(C_SVC(sid, S_BYTES), len);
            count(C_SVC(sid, S_TO_HOST), 1);
            return out(skb, c, HOST, len);
        }
        struct nat *n = c->nconns ? bpf_map_lookup_elem(&conns, &k) : 0;
        if (n) {
            if (n->to_client || (tcp && (flags & 0x07)) || !((m & MODE_FAILSAFE) || tcp))
                return punt(skb, c, in);
            if (!(n->macs[0] | n->macs[1] | n->macs[2] | n->macs[3] | n->macs[4] | n->macs[5]))
                return punt(skb, c, in); // backup MAC not known yet
            n->last_seen_ns = bpf_ktime_get_ns();
            if (n->replied)
                n->assured = 1;
            __sync_fetch_and_add(&n->packets, 1);
            if (rewrite(skb, n, tcp ? 50 : 40, udp))
                return punt(skb, c, in);
            count(C_RX_P(in), 1);
            count(C_RX_B(in), len);
            count(C_SVC(sid, S_PACKETS), 1);
            count(C_SVC(sid, S_BYTES), len);
            count(C_SVC(sid, S_TO_BACKUP), 1);
            count(C_TO_BACKUP, 1);
            return out(skb, c, NET, len);
        }
        if (m & MODE_FAILSAFE)
            return punt(skb, c, in); // a new NAT flow
        count(C_RX_P(in), 1);
        count(C_RX_B(in), len);
        count(C_SVC(sid, S_PACKETS), 1);
        count(C_SVC(sid, S_BYTES), len);
        count(C_SVC(sid, S_TO_HOST), 1);
        count(C_CRITICAL, 1);
        if (udp || (flags & 0x12) == 0x02) {
            pend_push(skb, c, &k, sid, len); // the replay store keeps it
            if (udp || !c->carry)
                return out(skb, c, HOST, len);
            return out_copy(skb, c, HOST, len, TAG_REQUEST); // tcp_carry follows the SYN too
        }
        if (c->carry && tcp && ((flags & 0x05) || (total > 20 + doff && !bpf_map_lookup_elem(&nocopy, &k))))
            return out_copy(skb, c, HOST, len, TAG_REQUEST); // tcp_carry keeps the client's bytes
        return out(skb, c, HOST, len);
    }
    // from the host
    if (eq4(dst, c->nic_ip))
        return punt(skb, c, in); // heartbeat replies and other frames for the NIC itself
    {
        __u32 s;
        __builtin_memcpy(&s, src, 4);
        if (!bpf_map_lookup_elem(&watch, &s) || !plain)
            goto forward;
    }
    if (proto == 6 && len >= 54) {
        if (data + 54 > end)
            return punt(skb, c, in);
        if (!(f[47] & 0x06)) {
            if (!c->carry)
                goto forward;
            __u32 total = ((__u32)f[16] << 8) | f[17], doff = (f[46] >> 4) * 4;
            if (!(f[47] & 0x01) && total <= 20 + doff)
                goto forward; // a pure ACK: tcp_carry does not count it
        }
    }
    if (proto == 1) {
        if (len < 35 || data + 35 > end)
            goto forward;
        if (f[34] != 3)
            goto forward;
        return punt(skb, c, in);
    }
    if (data + 36 > end)
        return punt(skb, c, in);
    if (!service_of(src, proto, f + 34))
        goto forward;
    // a critical reply (the checks of pipeline.fast): forwarded, and marks its request answered
    if (len < 42 || data + 42 > end)
        return punt(skb, c, in);
    {
        __u32 total = ((__u32)f[16] << 8) | f[17];
        if (total + 14 > len)
            return punt(skb, c, in);
        if (proto == 17) {
            if (total < 28)
                return punt(skb, c, in);
        } else if (proto == 6) {
            if (len < 54 || data + 54 > end)
                return punt(skb, c, in);
            __u32 doff = (f[46] >> 4) * 4;
            if (doff < 20 || doff + 20 > total || (f[47] & 0x04))
                return punt(skb, c, in);
        } else {
            return punt(skb, c, in);
        }
    }
    struct flow hk = {};
    hk.proto = proto;
    __builtin_memcpy(hk.l3l4, f + 26, 12);
    int syn = proto == 6 && (f[47] & 0x02);
    if (proto == 6 && c->carry && c->nconns && bpf_map_lookup_elem(&conns, &hk))
        return punt(skb, c, in); // the host's segment of a connection carried to a backup
    count(C_RX_P(in), 1);
    count(C_RX_B(in), len);
    count(C_REPLY, 1);
    __u8 tflags = proto == 6 ? f[47] : 0;
    if (proto == 17 || syn) { // a UDP reply or a SYN-ACK answers its flow's oldest pending request
        struct flow rk = {};
        rk.proto = proto;
        __builtin_memcpy(rk.l3l4, f + 30, 4);
        __builtin_memcpy(rk.l3l4 + 4, f + 26, 4);
        __builtin_memcpy(rk.l3l4 + 8, f + 36, 2);
        __builtin_memcpy(rk.l3l4 + 10, f + 34, 2);
        pend_pop(&rk);
    }
    if (proto != 6 || !c->carry)
        return out(skb, c, NET, len);
    if (!syn && !(tflags & 0x05) && bpf_map_lookup_elem(&nocopy, &hk))
        return out(skb, c, NET, len);
    return out_copy(skb, c, NET, len, TAG_REPLY); // tcp_carry follows the host's segments
forward:
    count(C_RX_P(in), 1);
    count(C_RX_B(in), len);
    return out(skb, c, other, len);
}

char LICENSE[] SEC("license") = "GPL";
