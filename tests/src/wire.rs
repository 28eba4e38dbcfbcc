//! What crossed a link: a `tcpdump` capture on a bed interface ([`Capture`]) and what the
//! end-to-end tests ask of it ([`analyze`]): which TCP flows there were, whether each one's
//! bytes are TLS records from the first byte on, and whether a marker from the payload is
//! anywhere in the file.
//!
//! The parser reads only what tcpdump writes here: classic pcap (either byte order,
//! microsecond or nanosecond stamps), Ethernet frames, IPv4 and TCP. Flows are reassembled
//! by sequence number from their SYN, so a TLS record split across segments (or several
//! in one segment, or a segment the kernel offloaded as one 64 KiB packet) is read as the
//! receiver reads it.

use crate::{Node, Proc, Signal};
use anyhow::{Context, Result, bail, ensure};
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// `tcpdump` writing every frame of one interface of a node to a pcap file.
pub struct Capture {
    proc: Proc,
    path: PathBuf,
}

impl Capture {
    /// Starts capturing on `interface` in `node`'s network namespace into `path`; returns
    /// once tcpdump says it is listening, so no frame sent after this is missed.
    pub fn start(node: &Node, interface: &str, path: &Path) -> Result<Capture> {
        let mut cmd = Command::new("tcpdump");
        // --immediate-mode: hand each packet to tcpdump as it comes, not in blocks, so none
        // waits in the kernel when tcpdump stops; -U: write each packet as it comes; -s 0:
        // whole frames; -B: a 32 MiB kernel buffer, so a burst is not dropped; -Z root:
        // keep root, or tcpdump drops to its own user and cannot write in the test's
        // directory.
        cmd.args([
            "-i",
            interface,
            "-n",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-B",
            "32768",
            "-Z",
            "root",
            "-w",
        ])
        .arg(path);
        let proc = node.spawn(cmd).map_err(|e| {
            if which("tcpdump").is_none() {
                e.context("tcpdump is not installed: run `cargo xtask setup` (Debian package tcpdump)")
            } else {
                e
            }
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.stderr_text().contains("listening on") {
            ensure!(
                Instant::now() < deadline,
                "tcpdump on {}/{interface} did not start listening:\n{}",
                node.name(),
                proc.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Capture { proc, path: path.to_owned() })
    }

    /// Stops tcpdump (SIGINT: it flushes the file and prints its counts), checks that it
    /// wrote every packet the kernel passed it and the kernel dropped none, and reads the
    /// file.
    pub fn stop(mut self) -> Result<Vec<u8>> {
        // The last ACKs and FINs of what the test just did are still on their way.
        std::thread::sleep(SETTLE);
        self.proc.kill(Signal::SIGINT)?;
        let Some(_status) = self.proc.wait_timeout(Duration::from_secs(10))? else {
            bail!("tcpdump did not stop on SIGINT:\n{}", self.proc.stderr_text());
        };
        let stderr = self.proc.stderr_text();
        let count =
            |what: &str| stderr.lines().find_map(|l| l.strip_suffix(what)?.trim().parse::<u64>().ok());
        let (captured, received, dropped) = (
            count(" packets captured"),
            count(" packets received by filter"),
            count(" packets dropped by kernel"),
        );
        // A capture with holes could miss the very bytes a test looks for.
        ensure!(
            dropped == Some(0) && captured.is_some() && captured == received,
            "tcpdump missed packets (captured {captured:?}, received by filter {received:?}, \
             dropped {dropped:?}); the capture is incomplete:\n{stderr}"
        );
        std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))
    }
}

/// How long a capture goes on after the test's traffic, before tcpdump is stopped.
const SETTLE: Duration = Duration::from_millis(300);

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.exists())
}

/// The TCP flows of a capture and what else it held.
#[derive(Debug, Default)]
pub struct Analysis {
    /// One entry per direction of each TCP connection, in the order first seen.
    pub flows: Vec<Flow>,
    /// IPv4 packets that are not TCP: (source, destination, IP protocol number); the
    /// kernel's own IGMP membership reports to 224.0.0.0/24 (sent as interfaces come up)
    /// are counted in `igmp` instead.
    pub other_ipv4: Vec<(Ipv4Addr, Ipv4Addr, u8)>,
    /// IGMP packets to link-local multicast groups: link housekeeping, no payload.
    pub igmp: usize,
    /// IPv6 packets carrying TCP or UDP (the bed uses no IPv6; link-local ND and MLD are
    /// left out).
    pub ipv6_transport: usize,
    /// Whether the marker's bytes appear anywhere in the file (headers included).
    pub marker_found: bool,
}

/// One direction of a TCP connection.
#[derive(Debug)]
pub struct Flow {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Whether its SYN is in the capture (only then is its byte stream known from the start).
    pub saw_syn: bool,
    /// Payload bytes carried (a retransmission from the same sequence number counted once).
    pub payload_bytes: u64,
    /// For a flow seen from its SYN: whether its bytes are TLS records end to end.
    pub tls: Option<Result<TlsStats, String>>,
}

impl Flow {
    /// Whether either end of the flow is `addr`.
    pub fn involves(&self, addr: Ipv4Addr) -> bool {
        *self.src.ip() == addr || *self.dst.ip() == addr
    }

    /// Whether either end's port is `port`.
    pub fn on_port(&self, port: u16) -> bool {
        self.src.port() == port || self.dst.port() == port
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: {} bytes", self.src, self.dst, self.payload_bytes)?;
        match &self.tls {
            None => write!(f, " (no SYN in the capture, not read as TLS)"),
            Some(Ok(t)) => write!(
                f,
                ", TLS: {} records, {} application data records, {} bytes of application data",
                t.records, t.application_data_records, t.application_data_bytes
            ),
            Some(Err(e)) => write!(f, ", not TLS: {e}"),
        }
    }
}

impl fmt::Display for Analysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            writeln!(f, "  {flow}")?;
        }
        for (src, dst, proto) in &self.other_ipv4 {
            writeln!(f, "  {src} -> {dst}: IP protocol {proto}")?;
        }
        writeln!(
            f,
            "  IGMP to link-local groups: {}; IPv6 TCP/UDP packets: {}; marker found: {}",
            self.igmp, self.ipv6_transport, self.marker_found
        )
    }
}

/// The TLS records of one direction of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsStats {
    pub records: u64,
    /// Records of content type 23 (application_data, version bytes 0x03 0x03): all a TLS
    /// 1.3 connection sends once the handshake is done.
    pub application_data_records: u64,
    pub application_data_bytes: u64,
}

/// Reads a pcap file: its TCP flows (reassembled, read as TLS) and whether `marker` is in it.
pub fn analyze(pcap: &[u8], marker: &[u8]) -> Result<Analysis> {
    let mut analysis = Analysis {
        marker_found: !marker.is_empty() && pcap.windows(marker.len()).any(|w| w == marker),
        ..Analysis::default()
    };
    let mut streams: HashMap<(SocketAddrV4, SocketAddrV4), Stream> = HashMap::new();
    let mut order = Vec::new();
    for frame in frames(pcap)? {
        let frame = frame?;
        match packet(frame)? {
            Packet::Tcp(seg) => {
                let key = (seg.src, seg.dst);
                let stream = streams.entry(key).or_insert_with(|| {
                    order.push(key);
                    Stream::default()
                });
                stream.add(&seg);
            }
            Packet::OtherIpv4 { dst, protocol: IPPROTO_IGMP, .. } if dst.octets()[..3] == [224, 0, 0] => {
                analysis.igmp += 1
            }
            Packet::OtherIpv4 { src, dst, protocol } => analysis.other_ipv4.push((src, dst, protocol)),
            Packet::Ipv6 { transport: true } => analysis.ipv6_transport += 1,
            Packet::Ipv6 { transport: false } | Packet::Other => {}
        }
    }
    for key in order {
        let stream = &streams[&key];
        let bytes = stream.payload();
        analysis.flows.push(Flow {
            src: key.0,
            dst: key.1,
            saw_syn: stream.isn.is_some(),
            payload_bytes: stream.segments.values().map(|s| s.len() as u64).sum(),
            tls: bytes.map(|b| b.and_then(|b| tls_records(&b))),
        });
    }
    Ok(analysis)
}

/// The frames (link-layer bytes) of a pcap file; Ethernet only.
fn frames(pcap: &[u8]) -> Result<impl Iterator<Item = Result<&[u8]>>> {
    ensure!(pcap.len() >= 24, "pcap file of {} bytes has no header", pcap.len());
    let magic = u32::from_le_bytes(pcap[0..4].try_into().expect("4 bytes"));
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => bail!("not a pcap file (magic {other:#010x}); pcapng is not read here"),
    };
    let u32_at = move |b: &[u8], at: usize| {
        let bytes: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if little { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) }
    };
    let linktype = u32_at(pcap, 20);
    ensure!(linktype == 1, "pcap link type {linktype}: only Ethernet (1) is read here");
    let mut at = 24;
    Ok(std::iter::from_fn(move || {
        if at == pcap.len() {
            return None;
        }
        if pcap.len() - at < 16 {
            return Some(Err(anyhow::anyhow!("pcap record header cut short at byte {at}")));
        }
        let (captured, original) = (u32_at(pcap, at + 8) as usize, u32_at(pcap, at + 12) as usize);
        let start = at + 16;
        if pcap.len() - start < captured {
            return Some(Err(anyhow::anyhow!("pcap record at byte {at} cut short")));
        }
        if captured < original {
            return Some(Err(anyhow::anyhow!(
                "frame at byte {at} truncated to {captured} of {original} bytes (snap length)"
            )));
        }
        at = start + captured;
        Some(Ok(&pcap[start..at]))
    }))
}

struct Segment<'a> {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    syn: bool,
    payload: &'a [u8],
}

enum Packet<'a> {
    Tcp(Segment<'a>),
    OtherIpv4 { src: Ipv4Addr, dst: Ipv4Addr, protocol: u8 },
    Ipv6 { transport: bool },
    Other,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_IGMP: u8 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn packet(frame: &[u8]) -> Result<Packet<'_>> {
    ensure!(frame.len() >= 14, "Ethernet frame of {} bytes", frame.len());
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip),
        ETHERTYPE_IPV6 => {
            ensure!(ip.len() >= 40, "IPv6 header cut short");
            Ok(Packet::Ipv6 { transport: matches!(ip[6], IPPROTO_TCP | IPPROTO_UDP) })
        }
        _ => Ok(Packet::Other),
    }
}

fn ipv4(ip: &[u8]) -> Result<Packet<'_>> {
    ensure!(ip.len() >= 20 && ip[0] >> 4 == 4, "not an IPv4 header");
    let header = usize::from(ip[0] & 0x0f) * 4;
    // A packet the sender's kernel offloaded segmentation of is seen whole; its total
    // length is still right (up to 64 KiB). Frames may carry padding past it.
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let total = if total == 0 { ip.len() } else { total.min(ip.len()) };
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let protocol = ip[9];
    if protocol != IPPROTO_TCP {
        return Ok(Packet::OtherIpv4 { src, dst, protocol });
    }
    let tcp = &ip[header..total];
    ensure!(tcp.len() >= 20, "TCP header cut short ({src} -> {dst})");
    let offset = usize::from(tcp[12] >> 4) * 4;
    ensure!(tcp.len() >= offset, "TCP options cut short ({src} -> {dst})");
    Ok(Packet::Tcp(Segment {
        src: SocketAddrV4::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: SocketAddrV4::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        seq: u32::from_be_bytes(tcp[4..8].try_into().expect("4 bytes")),
        syn: tcp[13] & 0x02 != 0,
        payload: &tcp[offset..],
    }))
}

/// One direction's segments, by sequence number.
#[derive(Default)]
struct Stream {
    /// The initial sequence number, from the SYN.
    isn: Option<u32>,
    /// Payload by sequence number.
    segments: BTreeMap<u32, Vec<u8>>,
}

impl Stream {
    fn add(&mut self, seg: &Segment<'_>) {
        if seg.syn {
            self.isn = Some(seg.seq);
        }
        if !seg.payload.is_empty() {
            // A retransmission at the same sequence number keeps the longer of the two.
            let held = self.segments.entry(seg.seq).or_default();
            if held.len() < seg.payload.len() {
                *held = seg.payload.to_vec();
            }
        }
    }

    /// The bytes from the SYN on, or why they cannot be had: None without the SYN.
    fn payload(&self) -> Option<Result<Vec<u8>, String>> {
        let isn = self.isn?;
        let first = isn.wrapping_add(1);
        // Offsets from the first data byte; wrapping arithmetic handles a sequence space
        // that wraps during the capture.
        let mut parts: Vec<(u32, &[u8])> =
            self.segments.iter().map(|(seq, data)| (seq.wrapping_sub(first), data.as_slice())).collect();
        parts.sort_by_key(|(offset, _)| *offset);
        let mut out: Vec<u8> = Vec::new();
        for (offset, data) in parts {
            let offset = offset as usize;
            if offset > out.len() {
                return Some(Err(format!("bytes {}..{offset} are missing from the capture", out.len())));
            }
            let already = out.len() - offset;
            if already < data.len() {
                out.extend_from_slice(&data[already..]);
            }
        }
        Some(Ok(out))
    }
}

/// TLS's maximum record payload: 2^14 bytes plus 256 of AEAD expansion (RFC 8446 §5.2);
/// TLS 1.2 allows 2048, so that is what a reader of either accepts.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Reads `bytes` as back-to-back TLS records: content type 20..=23, version 3.1..=3.3
/// (TLS 1.3 writes 3.3, and 3.1 on its first ClientHello), a length up to the maximum.
/// A record cut short at the very end is allowed (the capture stopped mid-record).
pub fn tls_records(bytes: &[u8]) -> Result<TlsStats, String> {
    let mut stats = TlsStats::default();
    let mut at = 0;
    while at < bytes.len() {
        let header = &bytes[at..bytes.len().min(at + 5)];
        let kind = header[0];
        if !(20..=23).contains(&kind) {
            return Err(format!("byte {kind:#04x} at offset {at} is not a TLS content type"));
        }
        if header.len() < 5 {
            break;
        }
        if header[1] != 3 || !(1..=3).contains(&header[2]) {
            return Err(format!(
                "bytes {:#04x} {:#04x} at offset {} are not a TLS version",
                header[1],
                header[2],
                at + 1
            ));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_RECORD {
            return Err(format!("record at offset {at} claims {len} bytes, more than TLS allows"));
        }
        stats.records += 1;
        if kind == 23 {
            if header[2] != 3 {
                return Err(format!("application data record at offset {at} has version 3.{}", header[2]));
            }
            stats.application_data_records += 1;
            stats.application_data_bytes += len as u64;
        }
        at += 5 + len;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + 20 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_TCP, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src.ip().octets());
        ip.extend_from_slice(&dst.ip().octets());
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&src.port().to_be_bytes());
        tcp.extend_from_slice(&dst.port().to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0, 5 << 4, if syn { 0x02 } else { 0x18 }, 0, 0, 0, 0, 0, 0]);
        f.extend(ip);
        f.extend(tcp);
        f.extend_from_slice(payload);
        f
    }

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for f in frames {
            for v in [0u32, 0, f.len() as u32, f.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(f);
        }
        out
    }

    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xab, len));
        r
    }

    const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 40000);
    const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 2), 15008);

    #[test]
    fn tls_split_across_segments_out_of_order_and_retransmitted_is_read_whole() {
        let mut bytes = record(22, 100);
        bytes.extend(record(23, 3000));
        bytes.extend(record(23, 10));
        let isn = u32::MAX - 50; // the sequence space wraps inside the flow
        let at = |off: usize| isn.wrapping_add(1).wrapping_add(off as u32);
        let frames = [
            frame(A, B, isn, true, &[]),
            frame(A, B, at(0), false, &bytes[..7]),
            frame(A, B, at(1500), false, &bytes[1500..]),
            frame(A, B, at(7), false, &bytes[7..1500]),
            frame(A, B, at(7), false, &bytes[7..1000]),
        ];
        let a = analyze(&pcap(&frames), b"marker").unwrap();
        assert_eq!(a.flows.len(), 1);
        let flow = &a.flows[0];
        assert_eq!(flow.payload_bytes, bytes.len() as u64, "the retransmission is counted once");
        assert_eq!(
            flow.tls,
            Some(Ok(TlsStats { records: 3, application_data_records: 2, application_data_bytes: 3010 }))
        );
        assert!(!a.marker_found);
    }

    #[test]
    fn plaintext_is_not_tls_and_its_marker_is_found() {
        let frames =
            [frame(A, B, 7, true, &[]), frame(A, B, 8, false, b"GET / HTTP/1.1\r\nx-marker: secret\r\n")];
        let a = analyze(&pcap(&frames), b"secret").unwrap();
        assert!(a.marker_found);
        let Some(Err(why)) = &a.flows[0].tls else { panic!("{a}") };
        assert!(why.contains("0x47 at offset 0"), "{why}");
    }

    #[test]
    fn a_hole_or_a_missing_syn_is_reported_not_guessed() {
        let r = record(23, 50);
        let holed =
            [frame(A, B, 0, true, &[]), frame(A, B, 1, false, &r[..10]), frame(A, B, 21, false, &r[20..])];
        let a = analyze(&pcap(&holed), b"x").unwrap();
        assert_eq!(a.flows[0].tls, Some(Err("bytes 10..20 are missing from the capture".into())));
        let no_syn = [frame(A, B, 1, false, &r)];
        let a = analyze(&pcap(&no_syn), b"x").unwrap();
        assert_eq!(a.flows[0].tls, None);
        assert!(!a.flows[0].saw_syn);
    }

    #[test]
    fn tls_reader_refuses_what_is_not_records() {
        assert_eq!(tls_records(&record(23, 16)).unwrap().application_data_records, 1);
        assert!(tls_records(&[23, 3, 3, 0xff, 0xff]).unwrap_err().contains("more than TLS allows"));
        assert!(tls_records(&[23, 2, 0, 0, 1, 0]).unwrap_err().contains("not a TLS version"));
        assert!(tls_records(&[23, 3, 1, 0, 1, 0]).unwrap_err().contains("version 3.1"));
        let mut cut = record(23, 100);
        cut.truncate(50);
        assert_eq!(tls_records(&cut).unwrap().records, 1, "a record cut at the end of the capture");
    }

    #[test]
    fn other_protocols_are_listed() {
        let mut udp = frame(A, B, 0, false, b"hi");
        udp[14 + 9] = IPPROTO_UDP;
        let a = analyze(&pcap(&[udp]), b"hi").unwrap();
        assert!(a.flows.is_empty());
        assert_eq!(a.other_ipv4, [(*A.ip(), *B.ip(), IPPROTO_UDP)]);
        assert!(a.marker_found);

        let mut igmp = frame(A, SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 22), 0), 0, false, &[]);
        igmp[14 + 9] = IPPROTO_IGMP;
        let mut to_group = igmp.clone();
        to_group[14 + 16..14 + 20].copy_from_slice(&[239, 1, 2, 3]);
        let a = analyze(&pcap(&[igmp, to_group]), b"x").unwrap();
        assert_eq!(a.igmp, 1, "a membership report to a link-local group is housekeeping");
        assert_eq!(a.other_ipv4.len(), 1, "IGMP to any other group is listed");
    }
}
