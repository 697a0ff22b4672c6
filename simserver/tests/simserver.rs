//! End-to-end checks of the simulated server, run in-process on loopback:
//! every route and quirk of SERVERS.md, the files it writes (JAX JSON and
//! xplane, Kineto), grouped and multi-host collectives, and the synthetic
//! writer. Behaviour only: no assertion depends on how fast anything runs.

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use rankline_simserver::synthetic::{write_jax_rank, SyntheticRank};
use rankline_simserver::{
    Faults, GroupConfig, ServerKind, SimServer, SimServerConfig, TraceFileKind,
};
use rankline_xplane::messages::{x_event, x_stat};
use rankline_xplane::{read_profile_times, XSpace};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in this test's runtime; stopped on drop of `stop`.
struct Running {
    url: String,
    link: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the server shuts down")
            .expect("the server task ends cleanly");
    }
}

/// Small and quick, with the real server's behaviour otherwise.
fn quick(output: &Path) -> SimServerConfig {
    SimServerConfig {
        hostname: "simhost".into(),
        step_interval: Duration::from_millis(5),
        export_delay: Duration::from_millis(20),
        auto_stop_export_delay: Duration::from_millis(20),
        events_per_step: 120,
        default_output_dir: Some(output.to_path_buf()),
        ..SimServerConfig::default()
    }
}

async fn launch(config: SimServerConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = SimServer::bind(config, listener).await.unwrap();
    let url = format!("http://{}", server.http_addr());
    let link = server.link_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        url,
        link,
        stop: Some(stop),
        task,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn call(url: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let mut request = client().post(format!("{url}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn status_of(url: &str) -> String {
    let (code, body) = call(url, "/profile_status", None).await;
    assert_eq!(code, 200);
    serde_json::from_str::<Value>(&body).unwrap()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits (bounded) until `ready` holds.
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `<dir>/plugins/profile/*/<host>.{trace.json.gz,xplane.pb}`, when both exist.
fn jax_files(dir: &Path, host: &str) -> Option<(PathBuf, PathBuf)> {
    let runs = std::fs::read_dir(dir.join("plugins/profile")).ok()?;
    for run in runs.flatten() {
        let trace = run.path().join(format!("{host}.trace.json.gz"));
        let xplane = run.path().join(format!("{host}.xplane.pb"));
        if trace.exists() && xplane.exists() {
            return Some((trace, xplane));
        }
    }
    None
}

fn read_json_gz(path: &Path) -> Value {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_xspace(path: &Path) -> XSpace {
    XSpace::decode(&std::fs::read(path).unwrap()[..]).unwrap()
}

fn x_events(trace: &Value) -> Vec<&Value> {
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect()
}

const COLLECTIVES: [&str; 5] = [
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
];

fn is_collective(name: &str) -> bool {
    COLLECTIVES.iter().any(|kind| name.starts_with(kind))
}

/// `(run_id, hlo_op)` of every collective in a JAX trace.
fn collective_instances(trace: &Value) -> HashSet<(String, String)> {
    x_events(trace)
        .into_iter()
        .filter(|e| is_collective(e["name"].as_str().unwrap()))
        .map(|e| {
            let args = &e["args"];
            (
                args["run_id"].as_str().unwrap().to_string(),
                args["hlo_op"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn routes_and_quirks_follow_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let events_log = dir.path().join("events.jsonl");
    let mut config = quick(dir.path());
    config.events_log = Some(events_log.clone());
    config.tp_size = 4;
    let server = launch(config).await;
    let url = server.url.clone();

    let health = client().get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(health.text().await.unwrap().is_empty());
    assert_eq!(call(&url, "/health_generate", None).await.0, 200);
    let (code, info) = call(&url, "/get_server_info", None).await;
    assert_eq!(code, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["tp_size"], 4);
    assert_eq!(info["device"], "tpu");
    assert_eq!(info["nnodes"], 1);
    assert_eq!(info["node_rank"], 0);
    assert!(info["disaggregation_mode"].is_null());
    for field in [
        "ep_size",
        "dp_size",
        "dist_init_addr",
        "host",
        "port",
        "model_path",
    ] {
        assert!(info.get(field).is_some(), "get_server_info lacks {field}");
    }
    let (code, body) = call(&url, "/no_such_route", None).await;
    assert_eq!((code, body.as_str()), (404, r#"{"detail":"Not Found"}"#));

    assert_eq!(status_of(&url).await, "idle");
    // Stop with nothing running: a bare 500.
    assert_eq!(
        call(&url, "/stop_profile", None).await,
        (500, "Internal Server Error".into())
    );

    let output = dir.path().join("created/on/demand");
    let start = json!({"output_dir": output, "profile_id": "ignored", "host_tracer_level": 0, "python_tracer_level": 0});
    assert_eq!(
        call(&url, "/start_profile", Some(start)).await,
        (200, "Start profiling.\n".into())
    );
    assert!(output.is_dir(), "output_dir is created");
    assert_eq!(status_of(&url).await, "in_progress");
    // Start while profiling: a bare 500, and the running profile is untouched.
    assert_eq!(
        call(&url, "/start_profile", None).await,
        (500, "Internal Server Error".into())
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stop = call(&url, "/stop_profile", None).await;
    assert_eq!(
        stop,
        (200, "Stop profiling. This will take some time.\n".into())
    );
    // The answer comes after the files are written.
    let (trace, _) = jax_files(&output, "simhost").expect("both files exist when stop answers");
    assert_eq!(status_of(&url).await, "idle");
    assert_eq!(call(&url, "/stop_profile", None).await.0, 500);
    // The client's profile_id names nothing; level 0 left the Python tracer on.
    assert!(!trace.to_string_lossy().contains("ignored"));
    let names: Vec<String> = x_events(&read_json_gz(&trace))
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with('$')),
        "Python-tracer events present"
    );

    let log = std::fs::read_to_string(&events_log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "stop_profile",
            "start_profile",
            "start_profile",
            "stop_profile",
            "stop_profile"
        ]
    );
    assert!(lines
        .iter()
        .all(|l| l["received_unix_ns"].as_i64().unwrap() > 0 && l["node_rank"] == 0));
    server.shutdown().await;
}

#[tokio::test]
async fn jax_files_are_real_format_and_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick(dir.path());
    config.local_devices = Some(2);
    let server = launch(config).await;
    assert_eq!(call(&server.url, "/start_profile", None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(call(&server.url, "/stop_profile", None).await.0, 200);
    server.shutdown().await;
    let (trace_path, xplane_path) =
        jax_files(dir.path(), "simhost").expect("files in the default output dir");

    let trace = read_json_gz(&trace_path);
    assert_eq!(trace["displayTimeUnit"], "ns");
    assert_eq!(trace["metadata"]["highres-ticks"], true);
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(events.last().unwrap(), &json!({}), "trailing {{}}");
    let metadata: HashSet<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        metadata,
        HashSet::from([
            "process_name",
            "process_sort_index",
            "thread_name",
            "thread_sort_index"
        ])
    );
    let processes: HashSet<(i64, &str)> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_i64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(processes.contains(&(701, "/host:CPU")));
    assert!(processes.contains(&(1, "/device:TPU:0")) && processes.contains(&(2, "/device:TPU:1")));

    let times = read_profile_times(std::fs::File::open(&xplane_path).unwrap()).unwrap();
    let start = times.start_unix_ns.expect("profile_start_time");
    let stop = times.stop_unix_ns.expect("profile_stop_time");
    assert!(start < stop);
    let session_us = (stop - start) as f64 / 1000.0;
    let xs = x_events(&trace);
    assert!(xs
        .iter()
        .any(|e| e["name"] == "run_batch" && e["args"]["step_num"].is_string()));
    for event in &xs {
        let ts = event["ts"].as_f64().unwrap();
        let dur = event["dur"].as_f64().unwrap();
        assert!(
            ts >= 0.0 && ts + dur <= session_us,
            "ts is relative to profile_start_time: {event}"
        );
        if let Some(args) = event["args"].as_object() {
            assert!(
                args.values().all(Value::is_string),
                "args are strings: {event}"
            );
        }
    }
    let collectives: Vec<&&Value> = xs
        .iter()
        .filter(|e| is_collective(e["name"].as_str().unwrap()))
        .collect();
    let kinds: HashSet<&str> = collectives
        .iter()
        .map(|e| e["name"].as_str().unwrap().split('.').next().unwrap())
        .collect();
    assert_eq!(kinds, HashSet::from(COLLECTIVES));
    for event in &collectives {
        for arg in ["run_id", "hlo_op", "hlo_module"] {
            assert!(event["args"][arg].is_string(), "{arg} on {event}");
        }
    }

    let space = read_xspace(&xplane_path);
    assert_eq!(space.hostnames, ["simhost"]);
    let names: Vec<&str> = space.planes.iter().map(|p| p.name.as_str()).collect();
    for wanted in [
        "/host:metadata",
        "/host:CPU",
        "/device:TPU:0",
        "/device:TPU:1",
        "Task Environment",
    ] {
        assert!(names.contains(&wanted), "plane {wanted} in {names:?}");
    }
    let task = space
        .planes
        .iter()
        .find(|p| p.name == "Task Environment")
        .unwrap();
    let start_stat = task
        .stats
        .iter()
        .find(|s| task.stat_metadata[&s.metadata_id].name == "profile_start_time")
        .unwrap();
    assert_eq!(
        start_stat.value,
        Some(x_stat::Value::Uint64Value(start as u64)),
        "uint64 like JAX"
    );
    // The same events in both files, at the same relative times.
    let mut xplane_events = 0;
    for plane in &space.planes {
        for line in &plane.lines {
            assert!(
                line.timestamp_ns >= 0 && line.timestamp_ns < stop - start,
                "line timestamps are relative"
            );
            let first = line.events.first().unwrap();
            let Some(x_event::Data::OffsetPs(offset)) = first.data else {
                panic!("events carry offsets")
            };
            let name = &plane.event_metadata[&first.metadata_id].name;
            let ts_us = (line.timestamp_ns * 1000 + offset) as f64 / 1e6;
            assert!(
                xs.iter().any(|e| e["name"] == name.as_str()
                    && (e["ts"].as_f64().unwrap() - ts_us).abs() < 0.0015),
                "xplane event {name} at {ts_us} µs is in the JSON"
            );
            xplane_events += line.events.len();
        }
    }
    assert_eq!(xplane_events, xs.len());
}

#[tokio::test]
async fn num_steps_stops_by_itself_and_a_later_stop_gets_500() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch(quick(dir.path())).await;
    let start = json!({"num_steps": 3, "host_tracer_level": 2, "python_tracer_level": 0});
    assert_eq!(
        call(&server.url, "/start_profile", Some(start)).await.0,
        200
    );
    let mut status = status_of(&server.url).await;
    for _ in 0..500 {
        if status == "idle" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = status_of(&server.url).await;
    }
    assert_eq!(status, "idle");
    let (trace, _) = jax_files(dir.path(), "simhost").expect("files once idle");
    let steps = x_events(&read_json_gz(&trace))
        .into_iter()
        .filter(|e| e["name"] == "run_batch")
        .count();
    assert!(
        (1..=3).contains(&steps),
        "at most num_steps steps recorded, got {steps}"
    );
    assert_eq!(
        call(&server.url, "/stop_profile", None).await,
        (500, "Internal Server Error".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn older_builds_have_no_profile_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick(dir.path());
    config.profile_status_route = false;
    let server = launch(config).await;
    assert_eq!(call(&server.url, "/profile_status", None).await.0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn injected_faults() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick(dir.path());
    config.faults = Faults {
        fail_start: true,
        ..Faults::default()
    };
    let failing = launch(config).await;
    assert_eq!(
        call(&failing.url, "/start_profile", None).await,
        (500, "Internal Server Error".into())
    );
    assert_eq!(status_of(&failing.url).await, "idle");
    failing.shutdown().await;

    let mut config = quick(dir.path());
    config.faults.hang = true;
    let hanging = launch(config).await;
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let answer = short.get(format!("{}/health", hanging.url)).send().await;
    assert!(answer.unwrap_err().is_timeout(), "--hang never answers");
    hanging.shutdown().await;

    let output = dir.path().join("missing");
    let mut config = quick(&output);
    config.faults.missing_file = Some(TraceFileKind::Xplane);
    let partial = launch(config).await;
    assert_eq!(call(&partial.url, "/start_profile", None).await.0, 200);
    assert_eq!(call(&partial.url, "/stop_profile", None).await.0, 200);
    let run = std::fs::read_dir(output.join("plugins/profile"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(run.join("simhost.trace.json.gz").exists() && !run.join("simhost.xplane.pb").exists());
    partial.shutdown().await;
}

#[tokio::test]
async fn start_step_with_num_steps_can_hang_the_server_like_0_0_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick(dir.path());
    config.faults.emulate_start_step_hang = true;
    let server = launch(config).await;
    let start = json!({"start_step": 1, "num_steps": 2});
    assert_eq!(
        call(&server.url, "/start_profile", Some(start)).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let answer = short.get(format!("{}/health", server.url)).send().await;
    assert!(
        answer.unwrap_err().is_timeout(),
        "every later request hangs"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn sglang_kind_writes_kineto_through_a_tmp_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick(dir.path());
    config.kind = ServerKind::Sglang;
    config.tp_size = 2;
    config.tp_rank = 1;
    config.ep_size = 2;
    config.ep_rank = 1;
    config.faults.slow_write = Duration::from_millis(400);
    let server = launch(config).await;
    let (code, info) = call(&server.url, "/get_server_info", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&info).unwrap()["device"],
        "cuda"
    );
    assert_eq!(
        call(
            &server.url,
            "/start_profile",
            Some(json!({"output_dir": dir.path()}))
        )
        .await
        .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = server.url.clone();
    let stop = tokio::spawn(async move { call(&url, "/stop_profile", None).await });

    let list = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut saw_tmp_alone = false;
    eventually("the final file", || {
        let names = list();
        let tmp = names.iter().any(|n| n.ends_with(".trace.json.gz.tmp"));
        let done = names.iter().any(|n| n.ends_with(".trace.json.gz"));
        assert!(
            !(tmp && done),
            "never both the .tmp and the final file: {names:?}"
        );
        saw_tmp_alone |= tmp;
        done
    })
    .await;
    assert!(saw_tmp_alone, "the file is written as .tmp first");
    assert_eq!(stop.await.unwrap().0, 200);
    let name = list()
        .into_iter()
        .find(|n| n.ends_with(".trace.json.gz"))
        .unwrap();
    let (profile_id, rest) = name.split_once("-TP-").unwrap();
    assert!(
        profile_id.parse::<f64>().is_ok(),
        "profile_id is str(time.time()): {name}"
    );
    assert_eq!(rest, "1-EP-1.trace.json.gz");

    let trace = read_json_gz(&dir.path().join(&name));
    assert!(trace["baseTimeNanoseconds"].as_i64().unwrap() > 0);
    assert_eq!(trace["distributedInfo"]["rank"], 1);
    assert_eq!(trace["distributedInfo"]["world_size"], 2);
    assert_eq!(trace["distributedInfo"]["backend"], "nccl");
    assert!(trace["deviceProperties"].is_array());
    let nccl: Vec<&Value> = x_events(&trace)
        .into_iter()
        .filter(|e| {
            e["cat"] == "kernel" && e["name"].as_str().unwrap().starts_with("ncclDevKernel_")
        })
        .collect();
    assert!(!nccl.is_empty());
    for kernel in &nccl {
        let args = &kernel["args"];
        for arg in [
            "Process Group Name",
            "Collective name",
            "In msg nelems",
            "dtype",
            "Group size",
            "Rank",
            "Seq",
        ] {
            assert!(!args[arg].is_null(), "{arg} on {kernel}");
        }
        assert!(kernel["ts"].as_f64().unwrap() >= 0.0);
    }
    assert!(nccl.iter().any(|k| k["name"]
        .as_str()
        .unwrap()
        .starts_with("ncclDevKernel_AllReduce")));
    server.shutdown().await;
}

#[tokio::test]
async fn grouped_servers_share_collective_run_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = Vec::new();
    for rank in 0..2u32 {
        let mut config = quick(&dir.path().join(format!("rank{rank}")));
        config.hostname = format!("host{rank}");
        config.group = Some(GroupConfig {
            addr: "127.0.0.1:0".into(),
            size: 2,
            rank,
        });
        configs.push(config);
    }
    let hub = launch(configs.remove(0)).await;
    let mut member_config = configs.remove(0);
    member_config.group.as_mut().unwrap().addr =
        hub.link.expect("rank 0 binds the barrier").to_string();
    let member = launch(member_config).await;
    for server in [&hub, &member] {
        assert_eq!(call(&server.url, "/start_profile", None).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for server in [&hub, &member] {
        assert_eq!(call(&server.url, "/stop_profile", None).await.0, 200);
    }
    let instances: Vec<HashSet<(String, String)>> = (0..2)
        .map(|rank| {
            let (trace, _) = jax_files(
                &dir.path().join(format!("rank{rank}")),
                &format!("host{rank}"),
            )
            .unwrap();
            collective_instances(&read_json_gz(&trace))
        })
        .collect();
    let shared = instances[0].intersection(&instances[1]).count();
    assert!(
        shared > 0,
        "the same collective instances appear on both ranks"
    );
    member.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_second_process_claiming_a_rank_cannot_starve_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let grouped = |rank: u32, addr: String| {
        let mut config = quick(dir.path());
        config.group = Some(GroupConfig {
            addr,
            size: 2,
            rank,
        });
        config
    };
    let hub = launch(grouped(0, "127.0.0.1:0".into())).await;
    let addr = hub.link.unwrap().to_string();
    let first = launch(grouped(1, addr.clone())).await;
    // Steps run (health_generate answers after one) before the intruder comes.
    assert_eq!(call(&first.url, "/health_generate", None).await.0, 200);
    let intruder = launch(grouped(1, addr)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(&first.url, "/health_generate", None).await.0, 200);
    for server in [intruder, first, hub] {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn multi_host_node_0_broadcasts_and_every_node_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("shared-path");
    let node = |rank: u32, dist: String| {
        let mut config = quick(&output);
        config.hostname = format!("node{rank}");
        config.nnodes = 3;
        config.node_rank = rank;
        config.tp_size = 8;
        config.dist_init_addr = Some(dist);
        config
    };
    let node0 = launch(node(0, "127.0.0.1:0".into())).await;
    let dist = node0
        .link
        .expect("node 0 listens on dist_init_addr")
        .to_string();
    let node1 = launch(node(1, dist.clone())).await;
    let node2 = launch(node(2, dist)).await;

    let health = client()
        .get(format!("{}/health", node1.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    for path in [
        "/start_profile",
        "/stop_profile",
        "/get_server_info",
        "/profile_status",
    ] {
        assert_eq!(
            call(&node1.url, path, None).await.0,
            404,
            "{path} on node 1"
        );
    }
    let (_, info) = call(&node0.url, "/get_server_info", None).await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (info["nnodes"].as_i64(), info["node_rank"].as_i64()),
        (Some(3), Some(0))
    );

    // Wait until the other nodes take part in the collectives, so they are
    // connected when the start is broadcast.
    assert_eq!(call(&node0.url, "/health_generate", None).await.0, 200);
    assert_eq!(
        call(
            &node0.url,
            "/start_profile",
            Some(json!({"output_dir": output}))
        )
        .await
        .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(call(&node0.url, "/stop_profile", None).await.0, 200);
    eventually("every node's files", || {
        (0..3).all(|n| jax_files(&output, &format!("node{n}")).is_some())
    })
    .await;
    let instances: Vec<HashSet<(String, String)>> = (0..3)
        .map(|n| {
            let (trace, xplane) = jax_files(&output, &format!("node{n}")).unwrap();
            assert_eq!(read_xspace(&xplane).hostnames, [format!("node{n}")]);
            collective_instances(&read_json_gz(&trace))
        })
        .collect();
    assert!(instances[0]
        .intersection(&instances[1])
        .any(|i| instances[2].contains(i)));
    for server in [node2, node1, node0] {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn synthetic_ranks_line_up_in_true_time_whatever_their_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let true_start = 1_795_384_060_000_000_000_i64;
    let offsets = [0_i64, 250_000_000];
    let mut collective_ends = Vec::new();
    for (rank, offset) in offsets.into_iter().enumerate() {
        let mut spec = SyntheticRank::new(
            &format!("h{rank}"),
            true_start + offset + rank as i64 * 3_000_000,
            20_000,
            rank as u32,
        );
        spec.clock_offset_ns = offset;
        spec.first_collective_end_unix_ns = Some(true_start + 20_000_000);
        let files = write_jax_rank(&dir.path().join(format!("r{rank}")), &spec).unwrap();
        let times = read_profile_times(std::fs::File::open(&files.xplane_pb).unwrap()).unwrap();
        assert_eq!(times.start_unix_ns, Some(spec.profile_start_unix_ns));
        let trace = read_json_gz(&files.trace_json_gz);
        let xs = x_events(&trace);
        assert!(
            xs.len() > 15_000,
            "about the asked number of events: {}",
            xs.len()
        );
        // Absolute end (ns) of each all-reduce on device 0, back on true time.
        let ends: HashSet<(String, i64)> = xs
            .iter()
            .filter(|e| e["pid"] == 1 && e["name"].as_str().unwrap().starts_with("all-reduce"))
            .map(|e| {
                let end_us = e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap();
                let end_ns = spec.profile_start_unix_ns + (end_us * 1000.0).round() as i64 - offset;
                (e["args"]["run_id"].as_str().unwrap().to_string(), end_ns)
            })
            .collect();
        collective_ends.push(ends);
    }
    let common = collective_ends[0].intersection(&collective_ends[1]).count();
    assert!(
        common > 10,
        "the same all-reduce instances end at the same true instants ({common} shared)"
    );
}
