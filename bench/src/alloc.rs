//! `vpcep-bench alloc`: what the store's endpoint create costs as one subnet fills up,
//! the address and SNAT allocations being the part of it that may grow with the
//! endpoints already there.
//!
//! For each size N, a worker process fills a fresh store (its own temporary directory)
//! with N interface endpoints in one consumer subnet, spread over provider VPCs of at
//! most 4,000 endpoints each (a VPC has 4,094 SNAT addresses), then times
//! `Store::create_endpoint` towards the fullest provider VPC; each timed endpoint is
//! deleted again (untimed) so that N stays. With `--baseline BIN`, another vpcep-bench
//! build runs the same worker and the two take turns round by round, in alternating
//! order, so a before/after is one run on the same machine state.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use vpcep_model::{validate_service_name, PortMapping, Protocol, ServerType, TcpProxy};
use vpcep_store::{Caller, NewEndpoint, NewPort, NewService, NewSubnet, NewVpc, SqlStore, Store};

use crate::at_least_one;

#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Endpoints in the subnet while creates are timed.
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    pub sizes: Vec<usize>,
    /// Timed creates per size and build.
    #[arg(long, default_value_t = 200, value_parser = at_least_one::<usize>())]
    pub creates: usize,
    /// Rounds the creates are split into; the builds take turns round by round.
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<usize>())]
    pub rounds: usize,
    /// Another vpcep-bench build (e.g. of main), measured the same way in the same rounds.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// (internal) Be the worker for this size: fill a store, say `ready`, then time as
    /// many creates as each line of stdin asks for and print their microseconds.
    #[arg(long, hide = true)]
    pub worker: Option<usize>,
}

/// Endpoints per provider VPC while filling, below its 4,094 SNAT addresses.
const PER_PROVIDER: usize = 4000;

/// A worker process of one build, filled to one size.
struct Worker {
    name: String,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    child: Child,
    micros: Vec<u64>,
}

impl Drop for Worker {
    /// Closing its input ends the worker, which then removes its store's directory.
    fn drop(&mut self) {
        self.input.take();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn start(name: String, bin: &Path, size: usize) -> Result<Worker> {
        let mut child = Command::new(bin)
            .args(["alloc", "--worker", &size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut w = Worker {
            name,
            input,
            output,
            child,
            micros: Vec::new(),
        };
        if w.line()? != "ready" {
            bail!("worker of {} did not get ready", w.name);
        }
        Ok(w)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            bail!("worker of {} ended early", self.name);
        }
        Ok(line.trim().to_owned())
    }

    fn measure(&mut self, creates: usize) -> Result<()> {
        let input = self.input.as_mut().context("worker stdin")?;
        writeln!(input, "{creates}")?;
        let line = self.line()?;
        for m in line.split_whitespace() {
            self.micros.push(m.parse()?);
        }
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub(crate) async fn run(o: Opts) -> Result<()> {
    if let Some(size) = o.worker {
        return worker(size).await;
    }
    let this = std::env::current_exe()?;
    let mut builds = vec![("this build".to_owned(), this)];
    if let Some(b) = &o.baseline {
        builds.push((format!("baseline {}", b.display()), b.clone()));
    }
    println!("| endpoints in the subnet | build | creates | p50 ms | p90 ms | p50 vs baseline |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &size in &o.sizes {
        let mut workers = Vec::new();
        for (name, bin) in &builds {
            eprintln!("alloc: {name}: filling a store with {size} endpoints");
            workers.push(Worker::start(name.clone(), bin, size)?);
        }
        let per_round = o.creates.div_ceil(o.rounds);
        for round in 0..o.rounds {
            let n = per_round.min(o.creates - per_round * round);
            if n == 0 {
                break;
            }
            for i in 0..workers.len() {
                let w = (i + round) % workers.len();
                workers[w].measure(n)?;
            }
        }
        let p50s: Vec<f64> = workers
            .iter_mut()
            .map(|w| {
                w.micros.sort_unstable();
                percentile(&w.micros, 0.5)
            })
            .collect();
        for (w, p50) in workers.iter().zip(&p50s) {
            let ratio = match p50s.get(1) {
                Some(base) => format!("{:.2}x", p50 / base),
                None => "-".to_owned(),
            };
            println!(
                "| {size} | {} | {} | {p50:.2} | {:.2} | {ratio} |",
                w.name,
                w.micros.len(),
                percentile(&w.micros, 0.9),
            );
        }
    }
    Ok(())
}

/// The worker: a store in a temporary directory with `size` endpoints in one subnet.
async fn worker(size: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite = SqlStore::open_sqlite(dir.path()).await?;
    let store: &dyn Store = &sqlite;
    let account = store.create_account("bench".into(), "r1".into()).await?;
    store
        .set_quota("bench".into(), Some(1000), Some(size as i64 + 1000))
        .await?;
    let caller = Caller {
        domain_id: account.domain_id,
        project_id: account.project_id,
    };
    let (consumer, subnet) = vpc_with_subnet(store, &caller, "10.0.0.0/16").await?;
    let mut services = Vec::new();
    for _ in 0..size.div_ceil(PER_PROVIDER).max(1) {
        services.push(provider(store, &caller).await?);
    }
    let endpoint = |service: &str| NewEndpoint {
        service_id: service.to_owned(),
        vpc_id: consumer.clone(),
        subnet_id: Some(subnet.clone()),
        port_ip: None,
        enable_dns: false,
        routetables: None,
        whitelist: vec![],
        enable_whitelist: false,
        description: String::new(),
        tags: vec![],
        policy_statement: None,
        policy_document: None,
        region: "r1".into(),
    };
    for i in 0..size {
        store
            .create_endpoint(caller.clone(), endpoint(&services[i / PER_PROVIDER]))
            .await?;
    }
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let creates: usize = line?.trim().parse()?;
        let mut micros = Vec::with_capacity(creates);
        for _ in 0..creates {
            let start = Instant::now();
            let ep = store
                .create_endpoint(caller.clone(), endpoint(&services[0]))
                .await?;
            micros.push(start.elapsed().as_micros().to_string());
            store.delete_endpoint(caller.clone(), ep.id.clone()).await?;
            store.finish_deletions(vec![], vec![ep.id]).await?;
        }
        println!("{}", micros.join(" "));
    }
    sqlite.close().await;
    Ok(())
}

async fn vpc_with_subnet(
    store: &dyn Store,
    caller: &Caller,
    cidr: &str,
) -> Result<(String, String)> {
    let vpc = store
        .create_vpc(
            caller.clone(),
            NewVpc {
                name: "v".into(),
                cidr: cidr.into(),
                description: String::new(),
            },
        )
        .await?;
    let subnet = store
        .create_subnet(
            caller.clone(),
            NewSubnet {
                vpc_id: vpc.id.clone(),
                name: "s".into(),
                cidr: cidr.into(),
                gateway_ip: None,
                description: String::new(),
            },
        )
        .await?;
    Ok((vpc.id, subnet.id))
}

/// An available service (no approval) on a VM in a VPC of its own.
async fn provider(store: &dyn Store, caller: &Caller) -> Result<String> {
    let (vpc, subnet) = vpc_with_subnet(store, caller, "192.168.0.0/16").await?;
    let port = store
        .create_port(
            caller.clone(),
            NewPort {
                subnet_id: subnet,
                name: "vm".into(),
                ip: Some(Ipv4Addr::new(192, 168, 0, 10)),
                device_owner: String::new(),
                device_id: String::new(),
                is_host: false,
                machine: None,
            },
        )
        .await?;
    let svc = store
        .create_service(
            caller.clone(),
            NewService {
                vpc_id: vpc,
                port_id: port.id,
                server_type: ServerType::Vm,
                name: validate_service_name("web")?,
                approval_enabled: false,
                tcp_proxy: TcpProxy::Close,
                description: String::new(),
                ports: vec![PortMapping {
                    client_port: 80,
                    server_port: 8080,
                    protocol: Protocol::Tcp,
                }],
                tags: vec![],
                connection_limit: 3000,
            },
        )
        .await?;
    store
        .settle_services(vec![(svc.id.clone(), Ok(()))])
        .await?;
    Ok(svc.id)
}
