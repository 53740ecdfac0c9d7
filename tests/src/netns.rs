//! Several "hosts" on one machine: each host is a network namespace linked by a veth pair
//! to a Redis namespace that holds a bridge (the "switch") and the `redis-server`; the
//! test process itself reaches Redis through one more veth from the root namespace.
//!
//! ```text
//!   root ns: rq<tag> 10.A.B.254 ──┐
//!   rq<tag>h1: eth0 10.A.B.11 ────┤ br0 10.A.B.1 (redis-server)   in rq<tag>r
//!   rq<tag>h2: eth0 10.A.B.12 ────┤
//!   ...                           ┘
//! ```
//!
//! Every test gets its own random 10.A.B.0/24 (checked against the root namespace's routes
//! under a file lock, so tests running in parallel never share one) and its own short tag
//! in every name. [`Net::cut`] takes a host's switch port down, so its packets are silently
//! dropped both ways (an upstream partition: nothing fails fast, TCP just retransmits);
//! [`Net::unplug`] takes the host's own link down (its connects fail at once).
//! Processes started by the test in these namespaces (through [`Net::exec`]) are killed and
//! every namespace and link is deleted on drop, also when the test panics; a test process
//! that died without dropping leaves a state file the next [`Net::new`] cleans up after.
//!
//! Needs root and iproute2 (`ip netns`). Without them [`Net::or_skip`] prints
//! `skipped: ...` and the test returns.

use crate::{runq_prefixed, Output, RedisOpts, RedisServer, WorkerCmd};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The port `redis-server` listens on inside the Redis namespace (its own address space;
/// never 6379 all the same).
pub const REDIS_PORT: u16 = 16379;

const STATE_DIR: &str = "/tmp/runq-netns";

/// One simulated host.
#[derive(Debug, Clone)]
pub struct Host {
    /// 1-based.
    pub index: usize,
    /// `h1`, `h2`, ...: also the name of its switch port in the Redis namespace.
    pub name: String,
    /// The network namespace.
    pub ns: String,
    /// Its address, 10.A.B.(10 + index).
    pub addr: String,
}

/// The hosts, the Redis namespace and the links between them; torn down on drop.
pub struct Net {
    tag: String,
    /// `10.A.B`
    net: String,
    redis_ns: String,
    root_if: String,
    hosts: Vec<Host>,
    guard_route: bool,
    state_file: PathBuf,
}

/// Runs `ip ARGS`; `Err` with its stderr on failure.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_usize(COUNTER.fetch_add(1, Ordering::SeqCst));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// An exclusive lock on `<STATE_DIR>/.lock` (flock), released on drop.
struct FileLock(std::fs::File);

impl FileLock {
    fn take() -> Result<FileLock, String> {
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(STATE_DIR).map_err(|e| format!("create {STATE_DIR}: {e}"))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(STATE_DIR).join(".lock"))
            .map_err(|e| format!("open {STATE_DIR}/.lock: {e}"))?;
        // SAFETY: flock(2) on a descriptor this struct owns.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(format!("flock {STATE_DIR}/.lock failed"));
        }
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: as above.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The MAC address of `dev` in namespace `ns`.
fn mac(ns: &str, dev: &str) -> Result<String, String> {
    let out = ip(&["netns", "exec", ns, "ip", "-o", "link", "show", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| format!("no MAC address for {dev} in {ns}: {out}"))
}

/// Kills every process in `ns` (all of them were started by a test through this harness)
/// and deletes the namespace.
fn delete_ns(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: a process inside a namespace this harness created for a test.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Removes what test processes that died without dropping their [`Net`] left behind.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(STATE_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == ".lock") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let Some(pid) = lines.next().and_then(|l| l.trim().parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        for line in lines {
            if let Some(ns) = line.strip_prefix("ns ") {
                delete_ns(ns.trim());
            } else if let Some(link) = line.strip_prefix("link ") {
                let _ = ip(&["link", "del", link.trim()]);
            } else if let Some(route) = line.strip_prefix("route ") {
                let _ = ip(&[
                    "route",
                    "del",
                    "unreachable",
                    route.trim(),
                    "metric",
                    "4000",
                ]);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

impl Net {
    /// Creates `hosts` hosts and the Redis namespace, or says why it cannot (not root, no
    /// iproute2, no network namespaces).
    pub fn new(hosts: usize) -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        ip(&["-V"])?;
        let lock = FileLock::take()?;
        sweep_stale();
        let routes = ip(&["-4", "route", "show", "table", "all"])?;
        let addrs = ip(&["-4", "-o", "addr", "show"])?;
        let (tag, net) = loop {
            let r = random_u64();
            let net = format!("10.{}.{}", 100 + (r % 150), (r >> 8) % 256);
            let taken = |text: &str| text.contains(&format!("{net}."));
            if taken(&routes) || taken(&addrs) {
                continue;
            }
            let tag = format!("{:06x}", (r >> 16) & 0xff_ffff);
            if Path::new("/var/run/netns")
                .join(format!("rq{tag}r"))
                .exists()
            {
                continue;
            }
            break (tag, net);
        };
        let state_file = Path::new(STATE_DIR).join(&tag);
        let mut net = Net {
            redis_ns: format!("rq{tag}r"),
            root_if: format!("rq{tag}"),
            hosts: (1..=hosts)
                .map(|i| Host {
                    index: i,
                    name: format!("h{i}"),
                    ns: format!("rq{tag}h{i}"),
                    addr: format!("{net}.{}", 10 + i),
                })
                .collect(),
            tag,
            net,
            guard_route: false,
            state_file,
        };
        // The state file first, so a crash half way is cleaned up by the next sweep.
        let mut state = format!("{}\n", std::process::id());
        state.push_str(&format!("link {}\n", net.root_if));
        state.push_str(&format!("route {}.0/24\n", net.net));
        state.push_str(&format!("ns {}\n", net.redis_ns));
        for h in &net.hosts {
            state.push_str(&format!("ns {}\n", h.ns));
        }
        std::fs::write(&net.state_file, state).map_err(|e| format!("write state file: {e}"))?;
        // Drop cleans up whatever part was made if this fails.
        net.build()?;
        drop(lock);
        Ok(net)
    }

    fn build(&mut self) -> Result<(), String> {
        let rns = self.redis_ns.clone();
        let subnet = format!("{}.0/24", self.net);
        // Traffic to this subnet never leaves the machine, not even after teardown races:
        // a low-priority unreachable route under the real one.
        ip(&["route", "add", "unreachable", &subnet, "metric", "4000"])?;
        self.guard_route = true;
        ip(&["netns", "add", &rns])?;
        let in_redis = |args: &[&str]| -> Result<String, String> {
            let mut full = vec!["netns", "exec", rns.as_str(), "ip"];
            full.extend_from_slice(args);
            ip(&full)
        };
        in_redis(&["link", "set", "lo", "up"])?;
        // A fixed MAC: a bridge otherwise takes its ports' lowest, which changes as hosts
        // are added (and the neighbour entries below name it).
        let t = u32::from_str_radix(&self.tag, 16).unwrap_or(0);
        let br_mac = format!(
            "02:{:02x}:{:02x}:{:02x}:00:01",
            (t >> 16) & 0xff,
            (t >> 8) & 0xff,
            t & 0xff
        );
        in_redis(&["link", "add", "br0", "address", &br_mac, "type", "bridge"])?;
        in_redis(&["addr", "add", &format!("{}.1/24", self.net), "dev", "br0"])?;
        in_redis(&["link", "set", "br0", "up"])?;
        // The test process's own link.
        ip(&[
            "link",
            "add",
            &self.root_if,
            "type",
            "veth",
            "peer",
            "name",
            "root",
            "netns",
            &rns,
        ])?;
        in_redis(&["link", "set", "root", "master", "br0"])?;
        in_redis(&["link", "set", "root", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", self.net),
            "dev",
            &self.root_if,
        ])?;
        ip(&["link", "set", &self.root_if, "up"])?;
        for h in self.hosts.clone() {
            ip(&["netns", "add", &h.ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &h.ns, "type", "veth", "peer", "name", &h.name,
                "netns", &rns,
            ])?;
            in_redis(&["link", "set", &h.name, "master", "br0"])?;
            in_redis(&["link", "set", &h.name, "up"])?;
            let in_host = |args: &[&str]| -> Result<String, String> {
                let mut full = vec!["netns", "exec", h.ns.as_str(), "ip"];
                full.extend_from_slice(args);
                ip(&full)
            };
            in_host(&["link", "set", "lo", "up"])?;
            in_host(&["addr", "add", &format!("{}/24", h.addr), "dev", "eth0"])?;
            in_host(&["link", "set", "eth0", "up"])?;
            // Permanent neighbour entries both ways, so a cut link never fails address
            // resolution: no locally generated "host unreachable" reaches the sockets (it
            // would make TCP retry fast, RFC 6069), the packets simply vanish.
            let redis_mac = mac(&rns, "br0")?;
            let host_mac = mac(&h.ns, "eth0")?;
            in_host(&[
                "neigh",
                "replace",
                &self.redis_addr(),
                "lladdr",
                &redis_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
            in_redis(&[
                "neigh",
                "replace",
                &h.addr,
                "lladdr",
                &host_mac,
                "dev",
                "br0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// A [`Net`], or `None` after printing `skipped: <test>: <why>` (the test then returns).
    pub fn or_skip(test: &str, hosts: usize) -> Option<Net> {
        match Net::new(hosts) {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("skipped: {test}: {e}");
                None
            }
        }
    }

    /// The short random tag in every name of this net.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The Redis address, 10.A.B.1.
    pub fn redis_addr(&self) -> String {
        format!("{}.1", self.net)
    }

    /// `redis-server` in the Redis namespace on [`redis_addr`](Self::redis_addr):
    /// [`REDIS_PORT`]; the test process reaches it through its own link.
    pub fn start_redis(&self) -> RedisServer {
        RedisServer::start_opts(RedisOpts {
            host: self.redis_addr(),
            port: Some(REDIS_PORT),
            prefix: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                self.redis_ns.clone(),
            ],
            // Reachable only inside this test's namespaces.
            args: vec!["--protected-mode".into(), "no".into()],
            ..RedisOpts::default()
        })
        .unwrap_or_else(|e| panic!("redis-server in namespace {}: {e}", self.redis_ns))
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The command prefix that runs a program on host `i`: `ip netns exec <ns>`.
    pub fn exec(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.host(i).ns.clone(),
        ]
    }

    /// A `runq-worker` on host `i`, talking to `redis` (its REDIS_URL is Redis's namespace
    /// address).
    pub fn worker<'a>(&self, i: usize, redis: &'a RedisServer) -> WorkerCmd<'a> {
        WorkerCmd::new(redis).prefix(&self.exec(i))
    }

    /// `runq ARGS` on host `i` against `redis`, with extra environment variables.
    pub fn runq(
        &self,
        i: usize,
        redis: &RedisServer,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        runq_prefixed(&self.exec(i), &redis.url(), args, env)
    }

    fn port(&self, i: usize, state: &str) {
        let name = self.host(i).name.clone();
        ip(&[
            "netns",
            "exec",
            &self.redis_ns,
            "ip",
            "link",
            "set",
            &name,
            state,
        ])
        .unwrap_or_else(|e| panic!("switch port of host {i} {state}: {e}"));
    }

    /// Partitions host `i`: its switch port goes down, so every packet to or from it is
    /// dropped without an error on either side (established TCP connections stay open
    /// and retransmit with growing backoff; new connects time out).
    pub fn cut(&self, i: usize) {
        self.port(i, "down");
    }

    /// Heals [`cut`](Self::cut).
    pub fn restore(&self, i: usize) {
        self.port(i, "up");
    }

    fn link(&self, i: usize, state: &str) {
        let ns = self.host(i).ns.clone();
        ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", state])
            .unwrap_or_else(|e| panic!("link of host {i} {state}: {e}"));
    }

    /// Takes host `i`'s own link down: its sockets get "network unreachable" at once.
    pub fn unplug(&self, i: usize) {
        self.link(i, "down");
    }

    /// Heals [`unplug`](Self::unplug).
    pub fn plug(&self, i: usize) {
        self.link(i, "up");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            delete_ns(&h.ns);
        }
        let _ = ip(&["link", "del", &self.root_if]);
        delete_ns(&self.redis_ns);
        if self.guard_route {
            let subnet = format!("{}.0/24", self.net);
            let _ = ip(&["route", "del", "unreachable", &subnet, "metric", "4000"]);
        }
        let _ = std::fs::remove_file(&self.state_file);
    }
}
