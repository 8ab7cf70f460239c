// SPDX-License-Identifier: GPL-2.0
/*
 * The eBPF backend's fast path (docs/dataplane.md, "Backend ebpf"): one tc ingress program on the home
 * link that does what the userspace forwarder does for the common packet, at the kernel's speed, and
 * hands everything else to that forwarder: a datagram for a home address into the TUN device's egress
 * (its TTL decremented, as the /32 route into the TUN would), IP-in-IP by letting it go on (TC_ACT_OK) to
 * the forwarder's raw socket. So what BPF cannot do (ICMP Time Exceeded, Fragmentation Needed, outer
 * fragments, neighbour resolution, more care-of addresses than a map value holds) is never dropped, only
 * slower.
 *
 * Three jobs: proxy ARP for the home addresses (below, answer_arp), and two told apart by the IPv4
 * protocol:
 *  - encapsulate (RFC 2003 3.1): an IPv4 datagram for a home address in ha_homes gets an outer header
 *    per care-of address (outer TTL configured, TOS and DF copied, inner TTL decremented as a router
 *    would), the FIB gives each copy its egress and MACs, and it is redirected; every copy but the last
 *    is a clone (simultaneous bindings, RFC 5944 3.6.1.3 S flag);
 *  - decapsulate (RFC 3024): IP-in-IP addressed to a tunnel source, whose (outer source = care-of,
 *    outer destination = source, inner source = home) triple is in ha_reverse (bound with T), loses its
 *    outer header and is handed to the TUN device's ingress, so that the kernel forwards the inner
 *    datagram as if it had come out of the TUN (TTL, ICMP, rp_filter, netfilter, as with "userspace").
 *    IP-in-IP to a tunnel source that is not in the map is dropped and counted: never an open relay.
 *
 * A member that does not serve (a standby) has the maps filled and this program attached, but
 * ha_config.serving is 0: no ARP answered, everything passes. A takeover is one map write.
 *
 * Maps are written by the daemon through the bpf(2) syscall (dataplane/bpf_maps.py); their layouts are
 * mirrored in dataplane/ebpf.py. Addresses are stored in network byte order, as they are on the wire.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_TUNNELS 4            /* care-of addresses a home address keeps in the fast path */
#define TOO_MANY 0xffffffff      /* ha_homes count: more than MAX_TUNNELS, the slow path does them all */
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define AF_INET 2
#define FLAG_REVERSE 1
#define PACKET_HOST 0       /* skb->pkt_type (linux/if_packet.h) */
#define PACKET_OTHERHOST 3
#define MIN_PATH_MTU 576                          /* as the userspace engine: no ICMP shrinks a path below */
#define PATH_MTU_AGE_NS (600ULL * 1000000000ULL)  /* RFC 1191 6.3: a learnt path MTU holds 10 minutes */

struct config {
	__u32 serving;      /* 0: pass everything (standby) */
	__u32 tun_ifindex;  /* the userspace path's TUN device: decapsulated datagrams enter the stack there */
	__u32 mtu;          /* the largest outer datagram a tunnel carries without asking (the home link's) */
	__u32 ttl;          /* the outer header's TTL */
	__u32 home_ifindex; /* the home link: the only one where ARP is answered for the home addresses */
	__u8 mac[ETH_ALEN]; /* what ARP replies for a home address give: the home link interface's, or */
	__u8 vmac[ETH_ALEN];/* the group's virtual MAC where one is configured (all zero: none). Frames to it are
	                     * taken as this host's while serving, so that a takeover moves every home address
	                     * with the first frame the new active member sends from it (docs/dataplane.md) */
	__u64 vmac_until;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) up to which the virtual MAC is ours: the daemon
	                     * renews it while it serves, so the program of a daemon killed on a live host stops
	                     * answering with the group's MAC, which would pull the switch's entry, and with it
	                     * every away home address, back from the new active member */
};

struct tunnel {
	__u32 care_of;
	__u32 source;
	__u32 flags;        /* FLAG_REVERSE: T */
};

struct home {
	struct bpf_spin_lock lock;  /* the daemon writes a value in place under it (BPF_F_LOCK); read under it */
	__u32 home;         /* the key: an element freed and given to another home address is not read as ours */
	__u32 count;        /* tunnels in use, or TOO_MANY; 0: the binding is gone (its key goes a second later) */
	struct tunnel tunnels[MAX_TUNNELS];
};

struct reverse_key {
	__u32 care_of;      /* outer source */
	__u32 source;       /* outer destination: the address the node registered with */
	__u32 home;         /* inner source */
};

struct stats_key {
	__u32 home;
	__u32 care_of;
};

struct stats {
	__u64 packets, bytes, reverse_packets, reverse_bytes;
};

/* Why a packet went the way it went: per-CPU packets and (inner) bytes, summed by the daemon
 * (ebpf.REASONS); the totals without walking ha_stats. */
struct counter {
	__u64 packets, bytes;
};

enum reason {
	ENCAPSULATED,        /* one per copy */
	DECAPSULATED,
	PASS_NOT_SERVING,
	PASS_TTL,            /* inner TTL <= 1: the forwarder sends Time Exceeded */
	PASS_OPTIONS,        /* IP options (to the kernel, which checks the header and routes it into the
	                      * forwarder's TUN), or a malformed reverse-tunnelled one */
	PASS_TOO_BIG,        /* the outer datagram would exceed the MTU: Fragmentation Needed or fragments */
	PASS_TOO_MANY,       /* more care-of addresses than the map value holds */
	PASS_NO_NEIGHBOUR,   /* no FIB result or no neighbour entry yet: the slow path resolves it */
	PASS_FAILED,         /* a helper refused (adjust_room, redirect): the slow path has it */
	PASS_FRAGMENT,       /* outer IP-in-IP fragment: the kernel reassembles it for the slow path */
	DROP_UNKNOWN_CARE_OF,
	DROP_NOT_REVERSE_TUNNEL,
	PATH_MTU_LEARNT,     /* ICMP Fragmentation Needed about one of our outer datagrams (passed on too) */
	ARP_ANSWERED,        /* an ARP request for a home address answered with the interface's MAC */
	PASS_BAD_HEADER,     /* for a home address, a header that is not a datagram's (bad checksum, lengths):
	                      * left to the kernel, which drops it and counts it (RFC 1812 5.2.2) */
	REASONS,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} ha_config SEC(".maps");

/* An element a delete frees, or an update replaces, may be handed out again at once (preallocated or not:
 * since Linux 6.1 the allocator keeps freed elements per CPU for reuse), while encapsulate() still holds a
 * pointer to it, and it would read another home address's tunnels: one mobile node's traffic sent to
 * another's care-of address. So the daemon never replaces or frees a value a packet may be reading: it
 * writes values in place under the value's lock (BPF_F_LOCK), a removal as count 0, and deletes a key only
 * a second after it was emptied, longer than a packet holds a pointer to a value it will use
 * (dataplane/ebpf.py, GRACE). The program copies what it needs under the same lock, and checks that the
 * value still names the home address it looked up: a packet that looked up an emptied value just before
 * its key went, and was held up until the element was handed to another home address, reads that
 * address's value, and drops it for not being its own. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct home);
} ha_homes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct reverse_key);
	__type(value, __u32);
} ha_reverse SEC(".maps");

/* Reference counts kept by the daemon: the care-of addresses and tunnel sources of all bindings. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u32);
} ha_care_of SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} ha_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 19);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct stats_key);
	__type(value, struct stats);
} ha_stats SEC(".maps");

/* What a router on the way to a care-of address said it carries (RFC 2003 4.1 tunnel soft state): a
 * larger outer datagram goes to the slow path, whose forwarder learnt the same from the same ICMP message
 * and answers the sender with Fragmentation Needed or carries the datagram in outer fragments. */
struct path_mtu {
	__u64 until_ns;
	__u32 mtu;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct path_mtu);
} ha_path_mtu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASONS);
	__type(key, __u32);
	__type(value, struct counter);
} ha_reasons SEC(".maps");

static __always_inline void add(__u32 why, __u64 bytes)
{
	struct counter *n = bpf_map_lookup_elem(&ha_reasons, &why);

	if (n) {  /* per CPU: no atomics needed */
		n->packets += 1;
		n->bytes += bytes;
	}
}

static __always_inline int count(__u32 why, int verdict)
{
	add(why, 0);
	return verdict;
}

/* The per-tunnel counters, made on first use so that loading a binding costs one map write. */
static __always_inline void account(__u32 home, __u32 care_of, __u64 bytes, int reverse)
{
	struct stats_key key = {.home = home, .care_of = care_of};
	struct stats *s = bpf_map_lookup_elem(&ha_stats, &key);

	if (!s) {
		struct stats zero = {};

		bpf_map_update_elem(&ha_stats, &key, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&ha_stats, &key);
		if (!s)
			return;
	}
	if (reverse) {
		__sync_fetch_and_add(&s->reverse_packets, 1);
		__sync_fetch_and_add(&s->reverse_bytes, bytes);
	} else {
		__sync_fetch_and_add(&s->packets, 1);
		__sync_fetch_and_add(&s->bytes, bytes);
	}
}

static __always_inline __u16 checksum(const void *header)
{
	const __u16 *words = header;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += words[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

struct hop {
	__u32 ifindex;
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
};

/* A datagram for a home address that the fast path does not tunnel: into the userspace forwarder's TUN
 * device, as the kernel's /32 route would put it, and with the router's work that route did (the TTL
 * decremented; TTL 0, too big and the rest the forwarder answers itself, docs/dataplane.md). Done here
 * rather than by letting the packet go on, so that it does not wait for the route: the maps have a
 * binding before its registration reply, the route may come later. Without a TUN device yet, the kernel
 * routes it (TC_ACT_OK). Called only on an untouched packet. */
static __always_inline int slow_path(struct __sk_buff *skb, struct config *cfg, __u32 why)
{
	count(why, 0);
	if (!cfg->tun_ifindex)
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_OK;
	if (ip->ttl > 0) {
		__u32 check = ip->check;

		check += bpf_htons(0x0100);
		ip->check = (__u16)(check + (check >= 0xffff));
		ip->ttl -= 1;
	}
	return bpf_redirect(cfg->tun_ifindex, 0);  /* egress of an L3 device: the MAC header is pulled */
}

/* Home network -> mobile node. */
static __always_inline int encapsulate(struct __sk_buff *skb, struct iphdr *inner, struct config *cfg)
{
	__u32 home_address = inner->daddr;
	struct home *home = bpf_map_lookup_elem(&ha_homes, &home_address);

	if (!home)
		return TC_ACT_OK;  /* not ours: whatever the host does with it */
	struct tunnel tunnels[MAX_TUNNELS];
	bpf_spin_lock(&home->lock);  /* one value, whole: never half of a write the daemon makes in place */
	__u32 owner = home->home;
	__u32 count_ = home->count;
	__builtin_memcpy(tunnels, home->tunnels, sizeof(tunnels));
	bpf_spin_unlock(&home->lock);
	if (count_ == 0 || owner != home_address)
		return TC_ACT_OK;  /* gone (its key waits out the grace), or no longer its element: not ours */
	if (!cfg->serving)
		return count(PASS_NOT_SERVING, TC_ACT_OK);
	/* The program runs before the kernel's own checks of an IP header (ip_rcv): a router MUST discard a
	 * datagram whose checksum is wrong (RFC 1812 5.2.2), and one shorter than its header says is no
	 * datagram. With options (ihl > 5) the kernel checks the header itself, below. */
	__u32 inner_len = bpf_ntohs(inner->tot_len);
	if (inner->version != 4 || inner->ihl < 5 || inner_len < (__u32)inner->ihl * 4 || inner_len > skb->len - ETH_HLEN ||
	    (inner->ihl == 5 && checksum(inner) != 0))
		return count(PASS_BAD_HEADER, TC_ACT_OK);
	if (count_ == TOO_MANY || count_ > MAX_TUNNELS)
		return slow_path(skb, cfg, PASS_TOO_MANY);
	if (inner->ihl != 5)
		return count(PASS_OPTIONS, TC_ACT_OK);  /* the kernel checks it (its checksum too) and routes it */
	if (inner->ttl <= 1)
		return slow_path(skb, cfg, PASS_TTL);
	__u32 outer_len = inner_len + sizeof(struct iphdr);
	if (inner_len < sizeof(struct iphdr) || outer_len > cfg->mtu || outer_len > 0xffff)
		return slow_path(skb, cfg, PASS_TOO_BIG);

	struct iphdr outer = {
		.version = 4,
		.ihl = 5,
		.tos = inner->tos,
		.tot_len = bpf_htons(outer_len),
		.frag_off = inner->frag_off & bpf_htons(IP_DF),
		.ttl = cfg->ttl,
		.protocol = IPPROTO_IPIP,
	};
	if (!outer.frag_off)
		outer.id = bpf_get_prandom_u32();  /* it may be fragmented on the way: an identification */
	__u8 inner_ttl = inner->ttl;

	/* Every copy's egress first, before the packet is touched: one without a FIB result or a neighbour
	 * sends the whole datagram to the slow path, whose raw socket makes the kernel resolve it. */
	struct hop hops[MAX_TUNNELS] = {};
	struct bpf_fib_lookup fib;
	for (__u32 i = 0; i < MAX_TUNNELS; i++) {
		if (i >= count_)
			break;
		__builtin_memset(&fib, 0, sizeof(fib));
		fib.family = AF_INET;
		fib.tos = outer.tos;
		fib.l4_protocol = IPPROTO_IPIP;
		fib.tot_len = outer_len;
		__u32 care_of = tunnels[i].care_of;
		struct path_mtu *path = bpf_map_lookup_elem(&ha_path_mtu, &care_of);
		if (path && outer_len > path->mtu && path->until_ns > bpf_ktime_get_ns())
			return slow_path(skb, cfg, PASS_TOO_BIG);
		fib.ipv4_src = tunnels[i].source;
		fib.ipv4_dst = tunnels[i].care_of;
		fib.ifindex = skb->ingress_ifindex;
		if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
			return slow_path(skb, cfg, PASS_NO_NEIGHBOUR);
		hops[i].ifindex = fib.ifindex;
		__builtin_memcpy(hops[i].dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(hops[i].smac, fib.smac, ETH_ALEN);
	}

	/* Room for the outer header between the MAC header and the datagram (packet pointers die here).
	 * Every write below is checksum-neutral for a CHECKSUM_COMPLETE skb: a valid IPv4 header sums to
	 * 0xffff, so adding one, or changing a TTL with its checksum (RFC 1624), leaves skb->csum right. */
	if (bpf_skb_adjust_room(skb, sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		return slow_path(skb, cfg, PASS_FAILED);  /* a failed adjust_room leaves the packet as it was */

	for (__u32 i = 0; i < MAX_TUNNELS; i++) {
		if (i >= count_)
			break;
		/* Direct writes: the headers are in the linear part (the outer one was just pushed there);
		 * the pointers are fetched again for every copy, as a clone invalidates them. */
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		struct iphdr *o = (void *)(eth + 1);
		struct iphdr *in = o + 1;
		if ((void *)(in + 1) > data_end)
			return count(PASS_FAILED, TC_ACT_SHOT);  /* cannot happen: the packet is half made */
		if (i == 0) {
			/* The inner TTL, as a router forwarding into the tunnel decrements it (RFC 2003 3.1). */
			__u32 check = in->check;

			check += bpf_htons(0x0100);
			in->check = (__u16)(check + (check >= 0xffff));
			in->ttl = inner_ttl - 1;
		}
		outer.saddr = tunnels[i].source;
		outer.daddr = tunnels[i].care_of;
		outer.check = 0;
		outer.check = checksum(&outer);
		*o = outer;
		__builtin_memcpy(eth->h_dest, hops[i].dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, hops[i].smac, ETH_ALEN);
		account(home_address, tunnels[i].care_of, inner_len, 0);
		add(ENCAPSULATED, inner_len);
		if (i + 1 < count_) {
			if (bpf_clone_redirect(skb, hops[i].ifindex, 0))
				count(PASS_FAILED, 0);  /* that copy is lost; the others go on */
			continue;
		}
		return bpf_redirect(hops[i].ifindex, 0);
	}
	return TC_ACT_SHOT;  /* not reached: count_ is 1..MAX_TUNNELS */
}

/* Mobile node -> anywhere, through the reverse tunnel. */
static __always_inline int decapsulate(struct __sk_buff *skb, struct iphdr *outer, struct config *cfg)
{
	__u32 destination = outer->daddr;

	if (!bpf_map_lookup_elem(&ha_sources, &destination))
		return TC_ACT_OK;  /* not addressed to a tunnel's end here */
	if (!cfg->serving)
		return count(PASS_NOT_SERVING, TC_ACT_OK);
	if (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(PASS_FRAGMENT, TC_ACT_OK);
	if (outer->ihl != 5)
		return count(PASS_OPTIONS, TC_ACT_OK);
	void *end = (void *)(long)skb->data_end;
	struct iphdr *inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > end || inner->version != 4 || inner->ihl < 5)
		return count(PASS_OPTIONS, TC_ACT_OK);  /* malformed: the slow path drops and names it */

	struct reverse_key key = {.care_of = outer->saddr, .source = destination, .home = inner->saddr};
	if (!bpf_map_lookup_elem(&ha_reverse, &key)) {
		__u32 care_of = outer->saddr;

		if (bpf_map_lookup_elem(&ha_care_of, &care_of))
			return count(DROP_NOT_REVERSE_TUNNEL, TC_ACT_SHOT);
		return count(DROP_UNKNOWN_CARE_OF, TC_ACT_SHOT);
	}
	__u32 inner_len = bpf_ntohs(inner->tot_len);
	if (!cfg->tun_ifindex)
		return count(PASS_FAILED, TC_ACT_OK);
	/* FIXED_GSO: a datagram the receiving side merged (GRO) keeps the segment size the node sent, as the
	 * kernel's own tunnel tests decapsulate; otherwise the kernel grows it by the 20 bytes taken off, and
	 * the segments leave 20 bytes larger than sent. */
	if (bpf_skb_adjust_room(skb, -(int)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return count(PASS_FAILED, TC_ACT_OK);
	account(key.home, key.care_of, inner_len, 1);
	add(DECAPSULATED, inner_len);
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);
}

/* ICMP Fragmentation Needed to a tunnel source about an IP-in-IP datagram from it: the path to that
 * care-of address is narrower than the link. Learnt here, and passed on for the forwarder to learn too. */
static __always_inline void learn_path_mtu(struct iphdr *ip, void *end, struct config *cfg)
{
	struct {
		__u8 type, code;
		__u16 checksum, unused, mtu;
	} *icmp = (void *)(ip + 1);
	struct iphdr *quoted = (void *)(icmp + 1);
	__u32 destination = ip->daddr;

	if (ip->ihl != 5 || (void *)(quoted + 1) > end || icmp->type != 3 || icmp->code != 4)
		return;
	if (quoted->protocol != IPPROTO_IPIP || !bpf_map_lookup_elem(&ha_sources, &destination))
		return;
	__u32 source = quoted->saddr, care_of = quoted->daddr;
	if (!bpf_map_lookup_elem(&ha_sources, &source))
		return;
	__u32 mtu = bpf_ntohs(icmp->mtu);
	if (mtu < MIN_PATH_MTU)  /* 0 from a router older than RFC 1191: the least, the slow path knows more */
		mtu = MIN_PATH_MTU;
	if (mtu >= cfg->mtu)
		return;
	struct path_mtu value = {.until_ns = bpf_ktime_get_ns() + PATH_MTU_AGE_NS, .mtu = mtu};
	bpf_map_update_elem(&ha_path_mtu, &care_of, &value, BPF_ANY);
	count(PATH_MTU_LEARNT, 0);
}

/* The group's virtual MAC (docs/dataplane.md, "A virtual MAC"): configured, held (its lease running), and
 * the destination of a frame. */
static __always_inline int has_vmac(const struct config *cfg)
{
	return cfg->vmac[0] | cfg->vmac[1] | cfg->vmac[2] | cfg->vmac[3] | cfg->vmac[4] | cfg->vmac[5];
}

static __always_inline int vmac_held(const struct config *cfg)
{
	return has_vmac(cfg) && cfg->vmac_until > bpf_ktime_get_ns();
}

static __always_inline int to_vmac(const struct ethhdr *eth, const struct config *cfg)
{
	int differ = 0;

#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		differ |= eth->h_dest[i] ^ cfg->vmac[i];
	return !differ;
}

/* Proxy ARP for the home addresses (RFC 5944 4.6), answered here while serving: the kernel answers its
 * proxy entries only once the route into the TUN is in (arp_process), and a registration reply must not
 * wait for a route. The kernel's answer, when it comes, is the same. Probes (sender 0.0.0.0, duplicate
 * address detection: a node back home asking whether its address is free) are not answered, as the
 * kernel answers them only for its own addresses; nor a node's request for itself. */
struct arp_ipv4 {
	__u16 htype, ptype;
	__u8 hlen, plen;
	__u16 op;
	__u8 sha[ETH_ALEN], spa[4], tha[ETH_ALEN], tpa[4];
};

static __always_inline int answer_arp(struct __sk_buff *skb, struct config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_ipv4 *arp = (void *)(eth + 1);
	__u32 target, sender;

	if ((void *)(arp + 1) > data_end || !cfg->serving || skb->ifindex != cfg->home_ifindex)
		return TC_ACT_OK;
	if (arp->htype != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != ETH_ALEN ||
	    arp->plen != 4 || arp->op != bpf_htons(1))
		return TC_ACT_OK;
	__builtin_memcpy(&target, arp->tpa, 4);
	__builtin_memcpy(&sender, arp->spa, 4);
	if (sender == 0 || sender == target)
		return TC_ACT_OK;
	struct home *home = bpf_map_lookup_elem(&ha_homes, &target);
	if (!home || !*(volatile __u32 *)&home->count || *(volatile __u32 *)&home->home != target)
		return TC_ACT_OK;  /* not away, or gone (aligned words: no lock needed to read one) */
	if (has_vmac(cfg) && !vmac_held(cfg))
		return TC_ACT_OK;  /* the group's MAC is not ours to give: our daemon is gone or has not served yet */
	const __u8 *mac = has_vmac(cfg) ? cfg->vmac : cfg->mac;
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	__builtin_memcpy(arp->tpa, arp->spa, 4);
	__builtin_memcpy(arp->sha, mac, ETH_ALEN);
	__builtin_memcpy(arp->spa, &target, 4);
	arp->op = bpf_htons(2);
	__builtin_memcpy(eth->h_dest, arp->tha, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	count(ARP_ANSWERED, 0);
	return bpf_redirect(skb->ifindex, 0);  /* back out of the link it came in by */
}

SEC("tc")
int ha_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 zero = 0;

	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	struct config *cfg = bpf_map_lookup_elem(&ha_config, &zero);
	if (!cfg)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return answer_arp(skb, cfg);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (skb->pkt_type == PACKET_OTHERHOST && cfg->serving && to_vmac(eth, cfg) && vmac_held(cfg)) {
		/* To the group's virtual MAC: ours while we serve, as if to the interface's own (what is not
		 * tunnelled below then goes on to the stack, which forwards it as any datagram for this host) */
		if (bpf_skb_change_type(skb, PACKET_HOST))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		eth = data;
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
	}
	if (skb->pkt_type != PACKET_HOST)  /* not another host's frame, nor a broadcast */
		return TC_ACT_OK;
	if (ip->protocol == IPPROTO_IPIP)
		return decapsulate(skb, ip, cfg);
	if (ip->protocol == IPPROTO_ICMP)
		learn_path_mtu(ip, end, cfg);  /* and on: ICMP to a home address is tunnelled like the rest */
	return encapsulate(skb, ip, cfg);
}

char LICENSE[] SEC("license") = "GPL";
