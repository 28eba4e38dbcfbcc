//! The eBPF side of the agent: loads the programs, pins programs' maps and links in
//! bpffs, attaches the cgroup programs once and the sk_lookup program per pod netns, and
//! offers typed access to the maps.
//!
//! Everything is pinned under `bpffs_dir` so that enrolled pods stay captured while the
//! agent is down (their connections are refused, never sent around the mesh) and a
//! restarted agent re-adopts the same maps and links.

mod bypass;
mod link;
mod sys;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, SockMap},
    programs::{CgroupSockAddr, SkLookup, SockOps},
};
pub use bypass::{BypassGuard, BypassTable};
use link::AttachType;
use std::{
    fs, io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};
use weft_ebpf_common::{ConnKey, EnrolledPod, MESH_PORTS, OrigDst, map_names};

/// The object built by build.rs from ebpf/weft-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("this agent was built with WEFT_EBPF_STUB=1 and carries no eBPF programs; rebuild without it")]
    StubObject,
    #[error("cannot mount bpffs at /sys/fs/bpf: {0}")]
    MountBpffs(nix::Error),
    #[error("cannot prepare pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing or of the wrong type: {detail}")]
    Map { name: &'static str, detail: String },
    #[error("kernel refused eBPF program {name}: {source}\nverifier log:\n{log}")]
    Verifier { name: &'static str, source: aya::programs::ProgramError, log: String },
    #[error("cannot open cgroup {path}: {source} (is cgroup v2 mounted there?)")]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("cannot attach {what} at {target}: {source}")]
    Attach { what: &'static str, target: String, source: io::Error },
    #[error("eBPF map {map}: {source}")]
    MapOp { map: &'static str, source: aya::maps::MapError },
    #[error("cannot find the agent's own cgroup v2 ({detail}): the capture programs exempt it by id")]
    OwnCgroup { detail: String },
}

/// What the datapath needs to know to load.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// The cgroup v2 directory whose processes (the pods) are captured.
    pub cgroup: PathBuf,
    /// Directory under bpffs for this agent's maps and links.
    pub bpffs_dir: PathBuf,
    /// Where cgroup v2 is mounted, to find the agent's own cgroup (exempt from capture).
    pub cgroup_root: PathBuf,
    /// Destination ports never captured (outbound).
    pub excluded_ports: Vec<u16>,
    /// Pod ports never steered to the agent (inbound), besides the mesh's own.
    pub excluded_inbound_ports: Vec<u16>,
}

/// Read-only view of the original-destination map, shared by every proxy task. Lookups
/// are one `bpf(BPF_MAP_LOOKUP_ELEM)` each and take no lock.
pub struct OrigDstTable {
    map: HashMap<MapData, ConnKey, OrigDst>,
}

impl OrigDstTable {
    /// The destination an application asked for, given the client address the agent's
    /// outbound socket accepted in the pod whose netns cookie is `netns_cookie`.
    pub fn lookup(&self, netns_cookie: u64, client: SocketAddrV4) -> Option<SocketAddrV4> {
        let key = ConnKey {
            netns_cookie,
            addr: [u32::from_ne_bytes(client.ip().octets()), 0, 0, 0],
            port: client.port(),
            family: weft_ebpf_common::AF_INET,
            _pad: 0,
        };
        let orig = self.map.get(&key, 0).ok()?;
        Some(SocketAddrV4::new(Ipv4Addr::from(orig.addr[0].to_ne_bytes()), orig.port))
    }
}

/// The loaded programs and the maps the enrollment loop writes.
pub struct Datapath {
    /// Keeps the programs loaded while we may still attach them to new pods.
    ebpf: Ebpf,
    links_dir: PathBuf,
    enrolled: HashMap<MapData, u64, EnrolledPod>,
    inbound_pods: HashMap<MapData, u32, u32>,
    listeners: SockMap<MapData>,
}

const CGROUP_PROGRAMS: [(&str, AttachType); 4] = [
    ("weft_connect4", AttachType::Connect4),
    ("weft_connect6", AttachType::Connect6),
    ("weft_getpeername4", AttachType::GetPeerName4),
    ("weft_getpeername6", AttachType::GetPeerName6),
];
const SOCK_OPS_PROGRAM: &str = "weft_sock_ops";
const SK_LOOKUP_PROGRAM: &str = "weft_sk_lookup";

impl Datapath {
    /// Loads and attaches everything. Returns the datapath and the shared lookup table.
    /// Any failure is fatal for the agent: it must never run with capture half set up.
    pub fn load(config: &DatapathConfig) -> Result<(Datapath, OrigDstTable, BypassTable), DatapathError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DatapathError::StubObject);
        }
        ensure_bpffs()?;
        let maps_dir = config.bpffs_dir.join("maps");
        let links_dir = config.bpffs_dir.join("links");
        for dir in [&maps_dir, &links_dir] {
            fs::create_dir_all(dir).map_err(|source| DatapathError::PinDir { path: dir.clone(), source })?;
        }
        let agent_cgroup = own_cgroup_id(&config.cgroup_root)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global("WEFT_AGENT_CGROUP_ID", &agent_cgroup, true)
            .load(EBPF_OBJECT)?;

        let cgroup = fs::File::open(&config.cgroup)
            .map_err(|source| DatapathError::Cgroup { path: config.cgroup.clone(), source })?;
        for (name, attach) in CGROUP_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|e| verifier_error(name, e))?;
            attach_cgroup(
                prog.fd().map_err(|e| verifier_error(name, e))?.as_fd(),
                &cgroup,
                attach,
                &links_dir,
                name,
                &config.cgroup,
            )?;
        }
        let sock_ops: &mut SockOps = program(&mut ebpf, SOCK_OPS_PROGRAM)?;
        sock_ops.load().map_err(|e| verifier_error(SOCK_OPS_PROGRAM, e))?;
        let fd = sock_ops.fd().map_err(|e| verifier_error(SOCK_OPS_PROGRAM, e))?;
        attach_cgroup(
            fd.as_fd(),
            &cgroup,
            AttachType::SockOps,
            &links_dir,
            SOCK_OPS_PROGRAM,
            &config.cgroup,
        )?;
        let sk_lookup: &mut SkLookup = program(&mut ebpf, SK_LOOKUP_PROGRAM)?;
        sk_lookup.load().map_err(|e| verifier_error(SK_LOOKUP_PROGRAM, e))?;

        let mut excluded: HashMap<MapData, u16, u8> = take_map(&mut ebpf, map_names::EXCLUDED_PORTS)?;
        let stale: Vec<u16> = excluded.keys().flatten().collect();
        for port in stale.into_iter().filter(|p| !config.excluded_ports.contains(p)) {
            let _ = excluded.remove(&port);
        }
        for port in &config.excluded_ports {
            excluded
                .insert(port, 1, 0)
                .map_err(|source| DatapathError::MapOp { map: map_names::EXCLUDED_PORTS, source })?;
        }
        let mut inbound_excluded: HashMap<MapData, u16, u8> =
            take_map(&mut ebpf, map_names::INBOUND_EXCLUDED_PORTS)?;
        let wanted: Vec<u16> = MESH_PORTS.iter().chain(&config.excluded_inbound_ports).copied().collect();
        let stale: Vec<u16> = inbound_excluded.keys().flatten().filter(|p| !wanted.contains(p)).collect();
        for port in stale {
            let _ = inbound_excluded.remove(&port);
        }
        for port in &wanted {
            inbound_excluded
                .insert(port, 1, 0)
                .map_err(|source| DatapathError::MapOp { map: map_names::INBOUND_EXCLUDED_PORTS, source })?;
        }
        let orig = OrigDstTable { map: take_map(&mut ebpf, map_names::ORIG_DST)? };
        let bypass =
            BypassTable::new(ebpf.take_map(map_names::INBOUND_BYPASS).ok_or(DatapathError::Map {
                name: map_names::INBOUND_BYPASS,
                detail: "not in the object".into(),
            })?);
        let datapath = Datapath {
            enrolled: take_map(&mut ebpf, map_names::ENROLLED)?,
            inbound_pods: take_map(&mut ebpf, map_names::INBOUND_PODS)?,
            listeners: take_map(&mut ebpf, map_names::INBOUND_LISTENERS)?,
            ebpf,
            links_dir,
        };
        Ok((datapath, orig, bypass))
    }

    fn sk_lookup_pin(&self, netns_cookie: u64) -> PathBuf {
        self.links_dir.join(format!("sk_lookup_{netns_cookie}"))
    }

    /// Attaches inbound steering to a pod's netns (or adopts the link an earlier agent
    /// pinned for it).
    pub fn attach_sk_lookup(&mut self, netns: &impl AsFd, netns_cookie: u64) -> Result<(), DatapathError> {
        let pin = self.sk_lookup_pin(netns_cookie);
        let prog: &mut SkLookup = program(&mut self.ebpf, SK_LOOKUP_PROGRAM)?;
        let fd = prog.fd().map_err(|e| verifier_error(SK_LOOKUP_PROGRAM, e))?;
        link::attach_pinned(fd.as_fd(), netns.as_fd(), AttachType::SkLookup, &pin).map_err(|source| {
            DatapathError::Attach {
                what: "sk_lookup",
                target: format!("netns cookie {netns_cookie}"),
                source,
            }
        })
    }

    /// Detaches inbound steering from a pod's netns: unpinning drops the last reference.
    pub fn detach_sk_lookup(&mut self, netns_cookie: u64) {
        let _ = fs::remove_file(self.sk_lookup_pin(netns_cookie));
    }

    /// Netns cookies of every pinned sk_lookup link, ours or an earlier agent's.
    pub fn sk_lookup_links(&self) -> Vec<u64> {
        fs::read_dir(&self.links_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("sk_lookup_")?.parse().ok())
            .collect()
    }

    pub fn enroll(&mut self, netns_cookie: u64, pod_ip: Ipv4Addr) -> Result<(), DatapathError> {
        let value = EnrolledPod { ipv4: u32::from_ne_bytes(pod_ip.octets()), flags: 0 };
        self.enrolled
            .insert(netns_cookie, value, 0)
            .map_err(|source| DatapathError::MapOp { map: map_names::ENROLLED, source })
    }

    pub fn unenroll(&mut self, netns_cookie: u64) {
        let _ = self.enrolled.remove(&netns_cookie);
    }

    /// Netns cookies currently in the ENROLLED map.
    pub fn enrolled_cookies(&self) -> Vec<u64> {
        self.enrolled.keys().flatten().collect()
    }

    pub fn set_listener(&mut self, slot: u32, listener: &impl AsRawFd) -> Result<(), DatapathError> {
        self.listeners
            .set(slot, listener, 0)
            .map_err(|source| DatapathError::MapOp { map: map_names::INBOUND_LISTENERS, source })
    }

    pub fn clear_listener(&mut self, slot: u32) {
        let _ = self.listeners.clear_index(&slot);
    }

    /// Steers every port of the pod at `ip` (but the excluded ones) to the listener in
    /// `slot`.
    pub fn set_inbound_pod(&mut self, ip: Ipv4Addr, slot: u32) -> Result<(), DatapathError> {
        self.inbound_pods
            .insert(u32::from_ne_bytes(ip.octets()), slot, 0)
            .map_err(|source| DatapathError::MapOp { map: map_names::INBOUND_PODS, source })
    }

    pub fn remove_inbound_pod(&mut self, ip: Ipv4Addr) {
        let _ = self.inbound_pods.remove(&u32::from_ne_bytes(ip.octets()));
    }

    /// Pod addresses currently steered, ours or an earlier agent's.
    pub fn inbound_pods(&self) -> Vec<Ipv4Addr> {
        self.inbound_pods.keys().flatten().map(|k| Ipv4Addr::from(k.to_ne_bytes())).collect()
    }
}

/// The cgroup v2 id (the directory's inode) of this process's cgroup, as
/// `bpf_get_current_cgroup_id` reports it for the agent's threads.
fn own_cgroup_id(cgroup_root: &Path) -> Result<u64, DatapathError> {
    use std::os::unix::fs::MetadataExt;
    let fail = |detail: String| DatapathError::OwnCgroup { detail };
    let text =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| fail(format!("/proc/self/cgroup: {e}")))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| fail("no cgroup v2 line (0::) in /proc/self/cgroup".into()))?;
    let dir = cgroup_root.join(path.trim_start_matches('/'));
    Ok(fs::metadata(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?.ino())
}

/// Removes every pin under `bpffs_dir`: links detach and maps are freed, so enrolled
/// pods talk directly again. This is uninstall, not restart.
pub fn uninstall(bpffs_dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(bpffs_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn attach_cgroup(
    prog: std::os::fd::BorrowedFd<'_>,
    cgroup: &fs::File,
    attach: AttachType,
    links_dir: &Path,
    name: &'static str,
    cgroup_path: &Path,
) -> Result<(), DatapathError> {
    link::attach_pinned(prog, cgroup.as_fd(), attach, &links_dir.join(name)).map_err(|source| {
        DatapathError::Attach { what: name, target: cgroup_path.display().to_string(), source }
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name).and_then(|p| p.try_into().ok()).ok_or(DatapathError::MissingProgram { name })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::Map { name, detail: "not in the object".into() })?;
    T::try_from(map).map_err(|e| DatapathError::Map { name, detail: e.to_string() })
}

fn verifier_error(name: &'static str, source: aya::programs::ProgramError) -> DatapathError {
    let log = match &source {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
        _ => String::new(),
    };
    DatapathError::Verifier { name, source, log }
}

/// Mounts bpffs at /sys/fs/bpf unless it is already there (it is not, on these machines).
fn ensure_bpffs() -> Result<(), DatapathError> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, at, fstype) = (f.next(), f.next(), f.next());
        at == Some("/sys/fs/bpf") && fstype == Some("bpf")
    }) {
        return Ok(());
    }
    nix::mount::mount(Some("bpf"), "/sys/fs/bpf", Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(DatapathError::MountBpffs)
}
