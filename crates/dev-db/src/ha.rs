//! A high-availability cluster on this machine: three etcd members and two
//! or three PostgreSQL nodes under Patroni, each process on its own
//! loopback address (a block `127.A.B.0/24` picked at random, so clusters
//! of parallel tests never share one). Patroni elects the leader through
//! etcd, promotes a synchronous standby when the leader's key expires, and
//! demotes a leader that cannot reach etcd.
//!
//! Addresses in a block: etcd member `j` (0-based) on `.{j+1}` (client
//! port 2379, peer port 2380); PostgreSQL node `i` on `.{i+11}:5432`, its
//! Patroni REST API on `.{i+11}:8008`.
//!
//! A throwaway cluster (tests) lives in a temporary directory with a
//! watchdog, like a throwaway server; a kept cluster (`baton db start
//! --ha`) lives in a directory of the operator's, its processes detached,
//! and [`HaCluster::stop_in`] stops them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use camino_tempfile::Utf8TempDir;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use slog::{Logger, info, o, warn};

use crate::binaries::tail;
use crate::watchdog::{Watchdog, alive, pid_in, reap_orphans};
use crate::{DATABASE_NAME, DevDbError, PgBinaries, USER_NAME};

/// How long the cluster gets to elect a leader and attach its standbys.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The file in a kept cluster's directory that describes it.
const STATE_FILE: &str = "baton-ha.json";

/// Patroni's three timings (seconds), which set how fast it fails over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct PatroniTimings {
    /// How long the leader key lives without renewal: the time from a
    /// leader's death to its standby's promotion.
    pub ttl: u32,
    /// How long Patroni sleeps between two rounds of its loop.
    pub loop_wait: u32,
    /// How long Patroni retries etcd and PostgreSQL before it gives up
    /// (a leader that cannot reach etcd this long demotes itself).
    pub retry_timeout: u32,
}

impl PatroniTimings {
    /// Patroni's defaults.
    pub const DEFAULTS: PatroniTimings = PatroniTimings {
        ttl: 30,
        loop_wait: 10,
        retry_timeout: 10,
    };

    /// The tightest timings Patroni's documentation allows: each setting
    /// at its documented minimum (`ttl` 20, `loop_wait` 1,
    /// `retry_timeout` 3), and within its rule `loop_wait + 2 *
    /// retry_timeout <= ttl`.
    pub const TIGHTEST: PatroniTimings = PatroniTimings {
        ttl: 20,
        loop_wait: 1,
        retry_timeout: 3,
    };
}

/// How the leader replicates to its standbys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Replication {
    /// Patroni's `synchronous_mode`: a commit is acknowledged once a
    /// synchronous standby has it, and only such a standby is promoted.
    /// With no healthy standby the leader goes on alone.
    Synchronous,
    /// `synchronous_mode_strict` too: with no synchronous standby the
    /// leader stops acknowledging commits rather than go on alone.
    Strict,
    /// Asynchronous replication: a commit is acknowledged before any
    /// standby has it, so a failover can lose it. For showing what the
    /// synchronous modes prevent; never for data that matters.
    Asynchronous,
}

/// Options for a cluster.
#[derive(Clone, Debug)]
pub struct HaClusterBuilder {
    nodes: usize,
    timings: PatroniTimings,
    replication: Replication,
    block: [u8; 2],
    etcd_via: BTreeMap<usize, Vec<SocketAddr>>,
}

impl Default for HaClusterBuilder {
    fn default() -> Self {
        HaClusterBuilder::new()
    }
}

impl HaClusterBuilder {
    /// Two PostgreSQL nodes, synchronous replication, the tightest
    /// documented timings, and a free address block picked at random.
    pub fn new() -> HaClusterBuilder {
        HaClusterBuilder {
            nodes: 2,
            timings: PatroniTimings::TIGHTEST,
            replication: Replication::Synchronous,
            block: free_block(),
            etcd_via: BTreeMap::new(),
        }
    }

    /// How many PostgreSQL nodes (2 or 3).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.clamp(2, 3);
        self
    }

    /// Patroni's timings.
    pub fn timings(mut self, timings: PatroniTimings) -> Self {
        self.timings = timings;
        self
    }

    /// How the leader replicates.
    pub fn replication(mut self, replication: Replication) -> Self {
        self.replication = replication;
        self
    }

    /// Node `node`'s Patroni reaches etcd at `hosts` instead of the
    /// members' own addresses: a proxy there can cut the node off from
    /// etcd without touching the rest of the cluster.
    pub fn etcd_via(mut self, node: usize, hosts: Vec<SocketAddr>) -> Self {
        self.etcd_via.insert(node, hosts);
        self
    }

    /// Etcd member `member`'s client address.
    pub fn etcd_addr(&self, member: usize) -> SocketAddr {
        etcd_client(self.block, member)
    }

    /// PostgreSQL node `node`'s address.
    pub fn postgres_addr(&self, node: usize) -> SocketAddr {
        postgres(self.block, node)
    }

    /// Starts a throwaway cluster in a temporary directory, stopped and
    /// removed on drop (or by its watchdog if this process dies). Ready
    /// when this returns: a leader, and every other node streaming.
    pub fn start(self, log: &Logger) -> Result<HaCluster, DevDbError> {
        let root = std::env::temp_dir();
        let root = Utf8PathBuf::try_from(root).unwrap_or("/tmp".into());
        static REAPED: std::sync::Once = std::sync::Once::new();
        REAPED.call_once(|| reap_orphans(&root, log));
        let temp = Utf8TempDir::with_prefix_in("baton-pg-ha-", &root).map_err(
            |e| io("cannot create a temporary directory in", &root, e),
        )?;
        let dir = temp.path().to_owned();
        let watchdog = Watchdog::start(&dir)
            .map_err(|e| io("cannot start the watchdog for", &dir, e))?;
        let mut cluster = self.assemble(dir, Some(watchdog), log)?;
        cluster.temp = Some(temp);
        if let Err(e) = cluster.boot() {
            // Its logs are the only account of why: keep them.
            cluster.keep_dir();
            return Err(e);
        }
        Ok(cluster)
    }

    /// Starts a cluster kept in `dir`, its processes detached so they
    /// outlive this one, and returns its URL; if one already runs there,
    /// returns its URL. [`HaCluster::stop_in`] stops it.
    pub fn start_in(
        self,
        dir: &Utf8Path,
        log: &Logger,
    ) -> Result<String, DevDbError> {
        if let Some(state) = State::read(dir)? {
            if state.pids.iter().any(|&pid| alive(pid)) {
                return Ok(url_for(&state.hosts()));
            }
            // Stopped: restart it with its own addresses and data.
            let mut this = self;
            this.block = state.block;
            this.nodes = state.nodes;
            this.timings = state.timings;
            this.replication = state.replication;
            return this.start_kept(dir, log);
        }
        self.start_kept(dir, log)
    }

    fn start_kept(
        self,
        dir: &Utf8Path,
        log: &Logger,
    ) -> Result<String, DevDbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io("cannot create the cluster directory", dir, e))?;
        let mut cluster = self.assemble(dir.to_owned(), None, log)?;
        cluster.detached = true;
        if let Err(e) = cluster.boot() {
            // Nothing half-started outlives a failed start.
            cluster.detached = false;
            return Err(e);
        }
        let state = State {
            block: cluster.block,
            nodes: cluster.nodes.len(),
            timings: cluster.timings,
            replication: cluster.replication,
            pids: cluster.pids(),
        };
        state.write(dir)?;
        let url = cluster.url();
        // Detached: the processes are the operator's now.
        cluster.etcd.iter_mut().for_each(|p| p.child = None);
        cluster.nodes.iter_mut().for_each(|n| n.patroni = None);
        Ok(url)
    }

    fn assemble(
        self,
        dir: Utf8PathBuf,
        watchdog: Option<Watchdog>,
        log: &Logger,
    ) -> Result<HaCluster, DevDbError> {
        let bins = PgBinaries::find()?;
        which("etcd")?;
        which("patroni")?;
        bins.hand_over(&dir)?;
        let log = log.new(o!("ha_dir" => dir.to_string()));
        let etcd = (0..3)
            .map(|j| Etcd {
                name: format!("e{j}"),
                client: etcd_client(self.block, j),
                peer: addr(self.block, j as u8 + 1, 2380),
                child: None,
            })
            .collect();
        let nodes = (0..self.nodes)
            .map(|i| Node {
                name: format!("n{i}"),
                postgres: postgres(self.block, i),
                api: addr(self.block, i as u8 + 11, 8008),
                patroni: None,
                etcd_hosts: self.etcd_via.get(&i).cloned(),
            })
            .collect();
        Ok(HaCluster {
            temp: None,
            dir,
            bins,
            block: self.block,
            timings: self.timings,
            replication: self.replication,
            etcd,
            nodes,
            watchdog,
            detached: false,
            log,
        })
    }
}

/// A running cluster: three etcd members and two or three PostgreSQL
/// nodes under Patroni, each on its own loopback address (etcd member `j`
/// on `127.A.B.{j+1}`, node `i` on `127.A.B.{i+11}:5432` with its REST API
/// on port 8008). Dropped, a throwaway cluster stops every process and
/// removes its directory.
///
/// ```
/// # fn main() -> Result<(), baton_dev_db::DevDbError> {
/// # let log = slog::Logger::root(slog::Discard, slog::o!());
/// let cluster = baton_dev_db::HaCluster::start(&log)?;
/// let leader = cluster.leader().expect("a leader");
/// assert!(cluster.url().contains("target_session_attrs=read-write"));
/// assert_eq!(cluster.node_count(), 2);
/// assert!(leader < 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HaCluster {
    temp: Option<Utf8TempDir>,
    dir: Utf8PathBuf,
    bins: PgBinaries,
    block: [u8; 2],
    timings: PatroniTimings,
    replication: Replication,
    etcd: Vec<Etcd>,
    nodes: Vec<Node>,
    watchdog: Option<Watchdog>,
    detached: bool,
    log: Logger,
}

#[derive(Debug)]
struct Etcd {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

#[derive(Debug)]
struct Node {
    name: String,
    postgres: SocketAddr,
    api: SocketAddr,
    patroni: Option<Child>,
    etcd_hosts: Option<Vec<SocketAddr>>,
}

/// One member as Patroni's REST API reports it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The node's name (`n0`, `n1`, ...).
    pub name: String,
    /// `leader`, `sync_standby`, `replica`, ...
    pub role: String,
    /// `running`, `starting`, `stopped`, ...
    pub state: String,
    /// The node's timeline (one more after each promotion).
    #[serde(default)]
    pub timeline: Option<u64>,
}

#[derive(Deserialize)]
struct ClusterView {
    members: Vec<Member>,
}

impl HaCluster {
    /// Options for a cluster.
    pub fn builder() -> HaClusterBuilder {
        HaClusterBuilder::new()
    }

    /// Starts a throwaway cluster with the default options.
    pub fn start(log: &Logger) -> Result<HaCluster, DevDbError> {
        HaClusterBuilder::new().start(log)
    }

    /// The URL naming every node for read-write sessions: a client that
    /// reconnects reaches whichever node is the leader then.
    pub fn url(&self) -> String {
        url_for(&self.nodes.iter().map(|n| n.postgres).collect::<Vec<_>>())
    }

    /// The same URL with other hosts in the nodes' places (proxies).
    pub fn url_via(hosts: &[SocketAddr]) -> String {
        url_for(hosts)
    }

    /// A URL for one node only, for any session (leader or standby).
    pub fn node_url(&self, node: usize) -> String {
        format!(
            "postgresql://{USER_NAME}@{}/{DATABASE_NAME}?connect_timeout=2",
            self.nodes[node].postgres
        )
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }

    /// How many PostgreSQL nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `node`'s PostgreSQL address.
    pub fn postgres_addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].postgres
    }

    /// The members as the first node that answers reports them.
    pub fn members(&self) -> Option<Vec<Member>> {
        self.nodes.iter().find_map(|n| {
            let (status, body) = http_get(n.api, "/cluster").ok()?;
            (status == 200).then_some(())?;
            serde_json::from_str::<ClusterView>(&body)
                .ok()
                .map(|v| v.members)
        })
    }

    /// The node that leads and runs now, if any.
    pub fn leader(&self) -> Option<usize> {
        self.leader_among(&self.members()?)
    }

    fn leader_among(&self, members: &[Member]) -> Option<usize> {
        members
            .iter()
            .find(|m| m.role == "leader" && m.state == "running")
            .and_then(|m| self.index_of(&m.name))
    }

    /// One line on the cluster's state, for logs and errors.
    pub fn describe(&self) -> String {
        match self.members() {
            None => "no Patroni REST API answers".to_owned(),
            Some(members) => members
                .iter()
                .map(|m| format!("{} {} {}", m.name, m.role, m.state))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Waits until there is a running leader and every node whose Patroni
    /// runs is a running standby of it (a synchronous one among them,
    /// unless replication is asynchronous); returns the leader.
    pub fn wait_healthy(
        &self,
        patience: Duration,
    ) -> Result<usize, DevDbError> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(leader) = self.healthy() {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                // The log of a node that is not a running member, else
                // the first node's.
                let members = self.members().unwrap_or_default();
                let lagging = self
                    .nodes
                    .iter()
                    .find(|n| {
                        !members.iter().any(|m| {
                            m.name == n.name
                                && m.state == "running"
                                && m.role != "replica"
                        })
                    })
                    .unwrap_or(&self.nodes[0]);
                let log = self.dir.join(format!("{}.log", lagging.name));
                return Err(DevDbError::NotReady {
                    reason: format!(
                        "the HA cluster did not become healthy in {}s: {}",
                        patience.as_secs(),
                        self.describe()
                    ),
                    tail: tail(
                        &std::fs::read_to_string(&log).unwrap_or_default(),
                    ),
                    log,
                });
            }
            pause(Duration::from_millis(100));
        }
    }

    fn healthy(&self) -> Option<usize> {
        let members = self.members()?;
        let leader = self.leader_among(&members)?;
        let running = self.nodes.iter().filter(|n| n.patroni.is_some());
        let all_in = running.clone().all(|n| {
            members
                .iter()
                .any(|m| m.name == n.name && m.state == "running")
        });
        let standbys = running.count() > 1;
        let sync = members.iter().any(|m| m.role == "sync_standby");
        let sync_ok =
            !standbys || self.replication == Replication::Asynchronous || sync;
        (all_in && sync_ok).then_some(leader)
    }

    /// Kills node `node`'s PostgreSQL (its postmaster, with SIGKILL);
    /// its Patroni stays and restarts it.
    pub fn kill_postgres(&self, node: usize) -> Result<(), DevDbError> {
        let pid =
            self.postmaster(node).ok_or_else(|| DevDbError::NotReady {
                reason: format!("node {node}'s PostgreSQL is not running"),
                log: self.dir.join(format!("n{node}.log")),
                tail: String::new(),
            })?;
        kill_tree(pid);
        Ok(())
    }

    /// Kills node `node` as a crash would: its Patroni and its PostgreSQL
    /// with every backend, all with SIGKILL. [`HaCluster::start_node`]
    /// brings it back.
    pub fn kill_node(&mut self, node: usize) {
        let postmaster = self.postmaster(node);
        self.kill_patroni(node);
        if let Some(pid) = postmaster {
            kill_tree(pid);
        }
        info!(self.log, "killed a node"; "node" => &self.nodes[node].name);
    }

    /// Kills node `node`'s Patroni alone, with SIGKILL, leaving its
    /// PostgreSQL running unmanaged (as a crashed manager would): nothing
    /// renews the node's leader key, and nothing demotes its PostgreSQL
    /// until [`HaCluster::start_node`] starts a Patroni that finds it.
    pub fn kill_patroni(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].patroni.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let name = self.nodes[node].name.clone();
        if let Some(w) = &mut self.watchdog {
            w.process(&format!("patroni_{name}"), None, "KILL");
        }
        info!(self.log, "killed a node's Patroni"; "node" => name);
    }

    /// Starts node `node`'s Patroni again (it rejoins as a standby,
    /// rewinding its data if it had diverged).
    pub fn start_node(&mut self, node: usize) -> Result<(), DevDbError> {
        if self.nodes[node].patroni.is_none() {
            self.spawn_patroni(node)?;
        }
        Ok(())
    }

    /// Kills etcd member `member` with SIGKILL; its data stays.
    pub fn kill_etcd(&mut self, member: usize) {
        if let Some(mut child) = self.etcd[member].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let name = self.etcd[member].name.clone();
        if let Some(w) = &mut self.watchdog {
            w.process(&format!("etcd_{name}"), None, "KILL");
        }
    }

    /// Starts etcd member `member` again, from its data.
    pub fn start_etcd(&mut self, member: usize) -> Result<(), DevDbError> {
        if self.etcd[member].child.is_none() {
            self.spawn_etcd(member)?;
        }
        Ok(())
    }

    /// The pid of node `node`'s postmaster, if it runs.
    fn postmaster(&self, node: usize) -> Option<i32> {
        pid_in(&self.node_dir(node).join("data/postmaster.pid"))
            .filter(|&pid| alive(pid))
    }

    /// Stops the kept cluster in `dir` (Patroni first, which stops its
    /// PostgreSQL cleanly, then etcd); `false` if none ran there.
    pub fn stop_in(dir: &Utf8Path) -> Result<bool, DevDbError> {
        let Some(state) = State::read(dir)? else {
            return Ok(false);
        };
        let running: Vec<i32> =
            state.pids.iter().copied().filter(|&p| alive(p)).collect();
        if running.is_empty() {
            return Ok(false);
        }
        // Patroni's pids come first in the file: each stops its server.
        for &pid in &running {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while alive(pid) && Instant::now() < deadline {
                pause(Duration::from_millis(50));
            }
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        Ok(true)
    }

    /// Whether a kept cluster runs in `dir`, and its URL.
    pub fn running_in(dir: &Utf8Path) -> Result<Option<String>, DevDbError> {
        Ok(State::read(dir)?
            .filter(|s| s.pids.iter().any(|&p| alive(p)))
            .map(|s| url_for(&s.hosts())))
    }

    fn pids(&self) -> Vec<i32> {
        let patroni = self.nodes.iter().filter_map(|n| n.patroni.as_ref());
        let etcd = self.etcd.iter().filter_map(|e| e.child.as_ref());
        patroni.chain(etcd).map(|c| c.id() as i32).collect()
    }

    fn node_dir(&self, node: usize) -> Utf8PathBuf {
        self.dir.join(&self.nodes[node].name)
    }

    /// Etcd first (all three, a quorum), then the first node alone (it
    /// bootstraps and leads), then the others, then the database.
    fn boot(&mut self) -> Result<(), DevDbError> {
        let started = Instant::now();
        for j in 0..self.etcd.len() {
            self.spawn_etcd(j)?;
        }
        self.wait_etcd()?;
        self.spawn_patroni(0)?;
        // Alone, it is healthy once it leads.
        self.wait_healthy(READY_TIMEOUT)?;
        for i in 1..self.nodes.len() {
            self.spawn_patroni(i)?;
        }
        let leader = self.wait_healthy(READY_TIMEOUT)?;
        // The database once a synchronous standby is attached: under
        // `synchronous_mode_strict` a lone leader acknowledges no commit,
        // and `createdb` would wait for ever.
        let host = self.nodes[leader].postgres.ip().to_string();
        let exists = self.bins.run(
            "psql",
            &[
                "-h",
                &host,
                "-U",
                USER_NAME,
                "-d",
                "postgres",
                "-Atc",
                "SELECT 1 FROM pg_database WHERE datname = 'baton'",
            ],
        )?;
        if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
            self.bins.run(
                "createdb",
                &["-h", &host, "-U", USER_NAME, DATABASE_NAME],
            )?;
        }
        info!(self.log, "HA cluster ready";
            "url" => self.url(),
            "elapsed_ms" => started.elapsed().as_millis() as u64);
        Ok(())
    }

    fn wait_etcd(&self) -> Result<(), DevDbError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let healthy = self.etcd.iter().all(|e| {
                http_get(e.client, "/health")
                    .is_ok_and(|(s, b)| s == 200 && b.contains("true"))
            });
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevDbError::NotReady {
                    reason: "etcd did not become healthy".to_owned(),
                    log: self.dir.join("e0.log"),
                    tail: tail(
                        &std::fs::read_to_string(self.dir.join("e0.log"))
                            .unwrap_or_default(),
                    ),
                });
            }
            pause(Duration::from_millis(50));
        }
    }

    fn spawn_etcd(&mut self, j: usize) -> Result<(), DevDbError> {
        let cluster = self
            .etcd
            .iter()
            .map(|e| format!("{}=http://{}", e.name, e.peer))
            .collect::<Vec<_>>()
            .join(",");
        let e = &self.etcd[j];
        let data = self.dir.join(&e.name);
        let log = self.dir.join(format!("{}.log", e.name));
        let mut command = Command::new("etcd");
        command
            .arg("--name")
            .arg(&e.name)
            .arg("--data-dir")
            .arg(&data)
            .arg(format!("--listen-client-urls=http://{}", e.client))
            .arg(format!("--advertise-client-urls=http://{}", e.client))
            .arg(format!("--listen-peer-urls=http://{}", e.peer))
            .arg(format!("--initial-advertise-peer-urls=http://{}", e.peer))
            .arg(format!("--initial-cluster={cluster}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token=baton-{}", self.dir));
        let child = self.spawn(command, &log)?;
        let name = format!("etcd_{}", e.name);
        if let Some(w) = &mut self.watchdog {
            w.process(&name, Some(child.id()), "KILL");
        }
        self.etcd[j].child = Some(child);
        Ok(())
    }

    fn spawn_patroni(&mut self, i: usize) -> Result<(), DevDbError> {
        let dir = self.node_dir(i);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io("cannot create the node directory", &dir, e))?;
            std::fs::set_permissions(
                &dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .map_err(|e| io("cannot restrict", &dir, e))?;
            self.bins.hand_over(&dir)?;
        }
        let config = self.dir.join(format!("{}.yml", self.nodes[i].name));
        std::fs::write(&config, self.patroni_config(i))
            .map_err(|e| io("cannot write", &config, e))?;
        self.bins.hand_over(&config)?;
        let log = self.dir.join(format!("{}.log", self.nodes[i].name));
        let mut command = Command::new("patroni");
        command.arg(&config).env("HOME", &dir);
        self.bins.as_server_user(&mut command);
        let child = self.spawn(command, &log)?;
        let name = format!("patroni_{}", self.nodes[i].name);
        if let Some(w) = &mut self.watchdog {
            w.process(&name, Some(child.id()), "KILL");
        }
        self.nodes[i].patroni = Some(child);
        Ok(())
    }

    fn spawn(
        &self,
        mut command: Command,
        log: &Utf8Path,
    ) -> Result<Child, DevDbError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| io("cannot open the log", log, e))?;
        let err = out.try_clone().map_err(|e| io("cannot open", log, e))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("LC_ALL", "C.UTF-8");
        if self.detached {
            // Out of the terminal's process group: a Ctrl-C to the CLI
            // does not reach the cluster.
            command.process_group(0);
        }
        command.spawn().map_err(|e| DevDbError::Io {
            what: "cannot start",
            path: log.to_owned(),
            source: e,
        })
    }

    fn patroni_config(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let dir = self.node_dir(i);
        let etcd: Vec<String> = match &node.etcd_hosts {
            Some(hosts) => hosts.iter().map(|h| h.to_string()).collect(),
            None => self.etcd.iter().map(|e| e.client.to_string()).collect(),
        };
        // Patroni asks etcd for its members and then talks to their own
        // addresses, past any proxy, unless told the hosts are proxies.
        let proxies = node.etcd_hosts.is_some();
        let PatroniTimings {
            ttl,
            loop_wait,
            retry_timeout,
        } = self.timings;
        let (sync, strict) = match self.replication {
            Replication::Synchronous => (true, false),
            Replication::Strict => (true, true),
            Replication::Asynchronous => (false, false),
        };
        // A new standby's base backup asks for a fast checkpoint (a
        // spread one waits minutes). Commit timestamps order writes of different processes in the
        // tests; rewinds need the hint bits logged. Isolation is set by
        // each Baton session, never server-wide: Patroni's own queries
        // on a standby fail under a SERIALIZABLE default.
        format!(
            r#"scope: baton-{b0}-{b1}
name: {name}
restapi:
  listen: {api}
  connect_address: {api}
etcd3:
  hosts: [{etcd}]
  use_proxies: {proxies}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: 1048576
    synchronous_mode: {sync}
    synchronous_mode_strict: {strict}
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 200
        track_commit_timestamp: 'on'
  initdb: [{{encoding: UTF8}}, {{locale: C}}]
  pg_hba:
    - local all all trust
    - host all all 127.0.0.0/8 trust
    - host replication all 127.0.0.0/8 trust
postgresql:
  listen: {pg}
  connect_address: {pg}
  data_dir: {dir}/data
  bin_dir: {bin}
  pgpass: {dir}/pgpass
  use_unix_socket: true
  basebackup: [{{checkpoint: fast}}]
  parameters:
    unix_socket_directories: '{dir}'
  authentication:
    superuser: {{username: {user}}}
    replication: {{username: {user}}}
    rewind: {{username: {user}}}
"#,
            b0 = self.block[0],
            b1 = self.block[1],
            name = node.name,
            api = node.api,
            pg = node.postgres,
            etcd = etcd.join(", "),
            bin = self.bins.bin_dir(),
            user = USER_NAME,
        )
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // Patroni first, so none restarts a server we stop.
        for i in 0..self.nodes.len() {
            let postmaster = self.postmaster(i);
            if let Some(mut child) = self.nodes[i].patroni.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(pid) = postmaster {
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
                let deadline = Instant::now() + Duration::from_secs(30);
                while alive(pid) && Instant::now() < deadline {
                    pause(Duration::from_millis(20));
                }
            }
        }
        for e in &mut self.etcd {
            if let Some(mut child) = e.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(w) = self.watchdog.take() {
            w.stand_down();
        }
        if std::thread::panicking() {
            self.keep_dir();
        }
    }
}

impl HaCluster {
    /// Keeps the directory (logs, data) past the cluster's end.
    fn keep_dir(&mut self) {
        if let Some(temp) = self.temp.take() {
            let kept = temp.keep();
            warn!(self.log, "kept the HA cluster's directory"; "dir" => %kept);
            let _ = std::fs::write(kept.join(crate::watchdog::KEPT_FILE), "");
        }
    }
}

/// What a kept cluster's directory records about it.
#[derive(serde::Serialize, Deserialize)]
struct State {
    block: [u8; 2],
    nodes: usize,
    timings: PatroniTimings,
    replication: Replication,
    pids: Vec<i32>,
}

impl State {
    fn hosts(&self) -> Vec<SocketAddr> {
        (0..self.nodes)
            .map(|i| addr(self.block, i as u8 + 11, 5432))
            .collect()
    }

    fn read(dir: &Utf8Path) -> Result<Option<State>, DevDbError> {
        let file = dir.join(STATE_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                DevDbError::Io {
                    what: "cannot read the HA cluster's state",
                    path: file,
                    source: std::io::Error::other(e),
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &file, e)),
        }
    }

    fn write(&self, dir: &Utf8Path) -> Result<(), DevDbError> {
        let file = dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&file, text).map_err(|e| io("cannot write", &file, e))
    }
}

fn url_for(hosts: &[SocketAddr]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    format!(
        "postgresql://{USER_NAME}@{}/{DATABASE_NAME}\
         ?target_session_attrs=read-write&connect_timeout=2",
        hosts.join(",")
    )
}

/// Etcd member `j`'s client address in `block`.
fn etcd_client(block: [u8; 2], j: usize) -> SocketAddr {
    addr(block, j as u8 + 1, 2379)
}

/// PostgreSQL node `i`'s address in `block`.
fn postgres(block: [u8; 2], i: usize) -> SocketAddr {
    addr(block, i as u8 + 11, 5432)
}

fn addr(block: [u8; 2], last: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, block[0], block[1], last),
        port,
    ))
}

/// A block `127.A.B.0/24` whose etcd and node addresses nobody listens on.
fn free_block() -> [u8; 2] {
    let mut seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..64 {
        // xorshift: any spread will do.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let block = [100 + (seed % 100) as u8, 1 + ((seed >> 8) % 250) as u8];
        let free = [1u8, 2, 3, 11, 12, 13]
            .iter()
            .all(|&last| TcpListener::bind(addr(block, last, 2379)).is_ok());
        if free {
            return block;
        }
    }
    [199, 199]
}

fn which(program: &str) -> Result<(), DevDbError> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| d.join(program).is_file())
    });
    if found {
        Ok(())
    } else {
        Err(DevDbError::HaMissing {
            program: program.to_owned(),
        })
    }
}

/// A bare HTTP/1.0 GET with short timeouts: Patroni's REST API and
/// etcd's health endpoint need nothing more.
fn http_get(to: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&to, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// SIGKILL to `pid` and every process whose parent it is (a postmaster's
/// backends), as a crash of the machine would end them.
fn kill_tree(pid: i32) {
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect();
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for child in children {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may hold spaces: read after it.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Polling a condition, not sleeping in its place.
fn pause(d: Duration) {
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(d);
}

fn io(
    what: &'static str,
    path: impl AsRef<Utf8Path>,
    source: std::io::Error,
) -> DevDbError {
    DevDbError::Io {
        what,
        path: path.as_ref().to_owned(),
        source,
    }
}
