//! End-to-end: the trust boundary (issue 11), with real processes on
//! loopback. Tokens guard both services; mutual TLS ties an agent's id to
//! its certificate; two agents cannot be one rank; a rogue agent cannot
//! make the coordinator list or write objects outside its rank's prefix;
//! an agent profiles an SGLang-like server that requires a bearer key only
//! with that key; a coordinator open beyond loopback warns. Certificates
//! are made at run time (rcgen).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rankline_e2e::{run_rankline, wait_until, write_private, Cluster, Spawn, TestPki};
use rankline_proto::agent_link_client::AgentLinkClient;
use rankline_proto::{
    agent_message, coordinator_message, AgentHello, AgentIdentity, AgentMessage, RankState,
    RankUpdate, Role, ServerKind, StoredObject,
};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

const OPERATOR_TOKEN: &str = "op-7f3a9c2e5b1d4680aa11";
const AGENT_TOKEN: &str = "ag-0c4e8b2f6a1d3579bb22";

/// The coordinator's token table and one token file per client, all 0600.
struct Tokens {
    _dir: tempfile::TempDir,
    table: PathBuf,
    operator: PathBuf,
    agent: PathBuf,
    wrong: PathBuf,
}

impl Tokens {
    fn new() -> Result<Tokens> {
        let dir = tempfile::tempdir()?;
        let file = |name: &str, contents: &str| -> Result<PathBuf> {
            let path = dir.path().join(name);
            write_private(&path, contents)?;
            Ok(path)
        };
        Ok(Tokens {
            table: file(
                "tokens",
                &format!(
                    "# name  role      token\nops     operator  {OPERATOR_TOKEN}\nnodes   agent     {AGENT_TOKEN}\n"
                ),
            )?,
            operator: file("ops.token", &format!("{OPERATOR_TOKEN}\n"))?,
            agent: file("agent.token", AGENT_TOKEN)?,
            wrong: file("wrong.token", "not-a-token-of-this-coordinator")?,
            _dir: dir,
        })
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `rankline <args>` and its exit code, stdout and stderr.
fn rankline(args: &[&str]) -> Result<(i32, String, String)> {
    let output = run_rankline(args)?;
    Ok((
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    ))
}

/// The ids of the connected agents, as `rankline agents --json` lists them
/// with `auth` (client flags) added.
fn connected_agents(url: &str, auth: &[&str]) -> Result<Vec<String>> {
    let mut args = vec!["agents", "--json", "--coordinator", url];
    args.extend_from_slice(auth);
    let (code, stdout, stderr) = rankline(&args)?;
    if code != 0 {
        bail!("rankline agents exited {code}: {stderr}");
    }
    let agents: Vec<Value> = serde_json::from_str(&stdout)?;
    Ok(agents
        .iter()
        .filter(|agent| agent["connected"] == true)
        .map(|agent| {
            agent["identity"]["agent_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect())
}

fn wait_for_log(proc: &rankline_e2e::Proc, what: &str) -> Result<String> {
    wait_until(
        &format!("{what:?} in the log"),
        Duration::from_secs(30),
        || {
            let log = proc.log_text();
            log.contains(what).then_some(log)
        },
    )
}

#[test]
fn tokens_guard_both_services_and_captures_say_who() -> Result<()> {
    let tokens = Tokens::new()?;
    let mut cluster = Cluster::start(&["-vv", "--token-file", path(&tokens.table)])?;
    let url = cluster.coordinator_url().to_string();
    let operator = ["--token-file", path(&tokens.operator)];

    // The CLI: no token, a wrong one, an agent's token on Control.
    let refusals = [
        (None, "requires a token"),
        (Some(&tokens.wrong), "not one this coordinator knows"),
        (Some(&tokens.agent), "may not use Control"),
    ];
    for (token, expected) in refusals {
        let mut args = vec!["agents", "--coordinator", &url];
        if let Some(token) = token {
            args.extend(["--token-file", path(token)]);
        }
        let (code, _, stderr) = rankline(&args)?;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        if expected != "may not use Control" {
            assert!(
                stderr.contains("--token-file") && stderr.contains("RANKLINE_TOKEN"),
                "{stderr}"
            );
        }
    }
    // RANKLINE_TOKEN works like --token-file.
    let by_variable = std::process::Command::new(rankline_e2e::rankline_bin())
        .args(["agents", "--coordinator", &url])
        .env("RANKLINE_TOKEN", OPERATOR_TOKEN)
        .output()?;
    assert!(
        by_variable.status.success(),
        "{}",
        text(&by_variable.stderr)
    );

    // Agents: only the agent token joins.
    let server = cluster.add_server("server", &["--kind", "sglang"])?;
    cluster.add_agent(
        "anonymous",
        &server,
        &["--agent-id", "anonymous", "--tp-rank", "1"],
    )?;
    cluster.add_agent(
        "with-operator-token",
        &server,
        &[
            "--agent-id",
            "with-operator-token",
            "--tp-rank",
            "2",
            "--token-file",
            path(&tokens.operator),
        ],
    )?;
    cluster.add_agent(
        "agent",
        &server,
        &["--agent-id", "node-0", "--token-file", path(&tokens.agent)],
    )?;
    wait_until("the agent with its token", Duration::from_secs(30), || {
        (connected_agents(&url, &operator).ok()? == ["node-0"]).then_some(())
    })?;
    let anonymous = wait_for_log(&cluster.agents[0], "refused")?;
    assert!(anonymous.contains("--token-file"), "{anonymous}");
    wait_for_log(&cluster.agents[1], "may not use AgentLink")?;

    // A capture stopped by hand: who started and who stopped it is kept.
    let mut capture = Spawn::rankline(
        "capture",
        &[
            "capture",
            "--json",
            "--profile-id",
            "audited",
            "--coordinator",
            &url,
        ],
    )
    .args(operator)
    .start()?;
    let show = |extra: &[&str]| -> Result<(i32, String, String)> {
        let mut args = vec!["capture", "show", "audited", "--coordinator", &url];
        args.extend_from_slice(&operator);
        args.extend_from_slice(extra);
        rankline(&args)
    };
    wait_until("the rank profiling", Duration::from_secs(30), || {
        let (_, stdout, _) = show(&["--json"]).ok()?;
        let summary: Value = serde_json::from_str(&stdout).ok()?;
        (summary["ranks"][0]["state"] == "profiling").then_some(())
    })?;
    let mut stop = vec!["stop", "audited", "--coordinator", &url];
    stop.extend_from_slice(&operator);
    let (code, _, stderr) = rankline(&stop)?;
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = wait_until("the capture's end", Duration::from_secs(60), || {
        let (_, stdout, _) = show(&["--json"]).ok()?;
        let summary: Value = serde_json::from_str(&stdout).ok()?;
        (summary["status"] == "complete" && !summary["manifest_key"].as_str()?.is_empty())
            .then_some(summary)
    })?;
    capture.stop();
    let audit = summary["audit"].as_array().context("audit")?;
    assert_eq!(audit.len(), 2, "{summary:#}");
    for (entry, action) in audit.iter().zip(["started", "stopped"]) {
        assert_eq!(entry["action"], action);
        let who = entry["who"].as_str().unwrap_or_default();
        assert!(who.starts_with("token ops from 127.0.0.1:"), "{who}");
    }
    let (_, table, _) = show(&[])?;
    assert!(
        table.contains("started:  by token ops from 127.0.0.1:"),
        "{table}"
    );
    assert!(
        table.contains("stopped:  by token ops from 127.0.0.1:"),
        "{table}"
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(
        cluster.storage().join("audited/manifest.json"),
    )?)?;
    assert_eq!(manifest["audit"], summary["audit"]);

    // Tokens are never logged, not even at debug level.
    let log = cluster.coordinator.log_text();
    assert!(
        log.contains("refused a call with an unknown token"),
        "{log}"
    );
    assert!(!log.contains(OPERATOR_TOKEN) && !log.contains(AGENT_TOKEN));
    Ok(())
}

#[test]
fn mutual_tls_ties_the_agent_id_to_its_certificate() -> Result<()> {
    let tokens = Tokens::new()?;
    let pki = TestPki::new("rankline test CA")?;
    let coordinator_cert = pki.server("coordinator")?;
    let agent_a = pki.client("agent-a")?;
    let mut cluster = Cluster::start(&[
        "--token-file",
        path(&tokens.table),
        "--tls-cert",
        path(&coordinator_cert.cert),
        "--tls-key",
        path(&coordinator_cert.key),
        "--tls-client-ca",
        path(pki.ca()),
    ])?;
    let url = cluster.coordinator_url().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let operator = [
        "--token-file",
        path(&tokens.operator),
        "--tls-ca",
        path(pki.ca()),
    ];

    // The CLI needs the CA (the system's roots do not know it), and TLS
    // settings with an http:// URL are a mistake worth naming.
    let (code, _, stderr) = rankline(&[
        "agents",
        "--coordinator",
        &url,
        "--token-file",
        path(&tokens.operator),
    ])?;
    assert_eq!(code, 2, "{stderr}");
    let plain = url.replace("https://", "http://");
    let (code, _, stderr) = rankline(&[
        "agents",
        "--coordinator",
        &plain,
        "--tls-ca",
        path(pki.ca()),
    ])?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("write https://"), "{stderr}");

    let server = cluster.add_server("server", &["--kind", "sglang"])?;
    let tls = |cert: &rankline_e2e::CertFiles| -> Vec<String> {
        [
            "--tls-ca",
            path(pki.ca()),
            "--tls-cert",
            path(&cert.cert),
            "--tls-key",
            path(&cert.key),
            "--token-file",
            path(&tokens.agent),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let spawn_agent = |name: &str, id: &str, tp: &str, extra: Vec<String>| {
        cluster
            .agent_spawn(name, &server, &["--agent-id", id, "--tp-rank", tp])
            .args(extra)
            .start()
    };
    let honest = spawn_agent("honest", "agent-a", "0", tls(&agent_a))?;
    let impostor = spawn_agent("impostor", "agent-b", "1", tls(&agent_a))?;
    let no_certificate = spawn_agent(
        "no-certificate",
        "agent-c",
        "2",
        [
            "--tls-ca",
            path(pki.ca()),
            "--token-file",
            path(&tokens.agent),
        ]
        .map(str::to_string)
        .to_vec(),
    )?;
    wait_until("the honest agent", Duration::from_secs(30), || {
        (connected_agents(&url, &operator).ok()? == ["agent-a"]).then_some(())
    })?;
    let refused = wait_for_log(&impostor, "not the agent id")?;
    assert!(refused.contains("agent-a"), "{refused}");
    wait_for_log(&no_certificate, "requires a client certificate")?;

    // A whole capture over TLS.
    let mut args = vec![
        "capture",
        "--json",
        "--duration",
        "300ms",
        "--coordinator",
        &url,
    ];
    args.extend_from_slice(&operator);
    let (code, _, stderr) = rankline(&args)?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(connected_agents(&url, &operator)?, ["agent-a"]);
    drop(honest);
    Ok(())
}

#[test]
fn two_agents_cannot_be_one_rank() -> Result<()> {
    let mut cluster = Cluster::start(&[])?;
    let url = cluster.coordinator_url().to_string();
    let server = cluster.add_server("server", &["--kind", "sglang"])?;
    cluster.add_agent("first", &server, &["--agent-id", "first"])?;
    wait_until("the first agent", Duration::from_secs(30), || {
        (connected_agents(&url, &[]).ok()? == ["first"]).then_some(())
    })?;
    // As if on another host: its own spool, so only the coordinator sees
    // the clash.
    let elsewhere = cluster.work.path().join("other-host-spool");
    let second = Spawn::rankline("second", &["agent", "--agent-id", "second"])
        .args([
            "--coordinator",
            &url,
            "--server",
            &server,
            "--host",
            "other-host",
        ])
        .args(["--spool", path(&elsewhere)])
        .start()?;
    let refused = wait_for_log(&second, "already taken")?;
    assert!(
        refused.contains("unified-0 TP-0-EP-0 is already taken by the connected agent first"),
        "{refused}"
    );
    wait_for_log(
        &cluster.coordinator,
        "another connected agent already is this rank",
    )?;
    assert_eq!(connected_agents(&url, &[])?, ["first"]);

    // Once the first one is gone, the second takes the rank.
    cluster.agents[0].stop();
    wait_until("the second agent", Duration::from_secs(30), || {
        (connected_agents(&url, &[]).ok()? == ["second"]).then_some(())
    })?;
    Ok(())
}

fn hello(agent_id: &str, host: &str) -> AgentMessage {
    let mut identity = AgentIdentity {
        agent_id: agent_id.to_string(),
        host: host.to_string(),
        server_url: "http://127.0.0.1:9".to_string(),
        trigger: true,
        ..Default::default()
    };
    identity.set_role(Role::Unified);
    identity.set_server_kind(ServerKind::SglangJax);
    AgentMessage {
        kind: Some(agent_message::Kind::Hello(AgentHello {
            identity: Some(identity),
            in_flight: Vec::new(),
        })),
    }
}

fn update(profile_id: &str, state: RankState, keys: &[String]) -> AgentMessage {
    let mut update = RankUpdate {
        profile_id: profile_id.to_string(),
        objects: keys
            .iter()
            .map(|key| StoredObject {
                key: key.clone(),
                size: 4,
                sha256: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    update.set_state(state);
    AgentMessage {
        kind: Some(agent_message::Kind::Update(update)),
    }
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files
}

#[test]
fn a_rogue_agent_cannot_place_objects_outside_its_prefix() -> Result<()> {
    let cluster = Cluster::start(&[])?;
    let url = cluster.coordinator_url().to_string();
    let runtime = tokio::runtime::Runtime::new()?;
    let profile_id = "rogue-1";
    let capture_url = url.clone();
    let (ended, capture) = runtime.block_on(async {
        // A hello whose host would leave the spool is refused outright.
        let mut link = AgentLinkClient::connect(url.clone()).await?;
        let (outbox, outgoing) = tokio::sync::mpsc::channel(16);
        outbox.send(hello("sneaky", "../../etc")).await?;
        let mut inbound = link.join(ReceiverStream::new(outgoing)).await?.into_inner();
        let refused = inbound.message().await.expect_err("the hello is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("host"), "{refused:?}");

        let (outbox, outgoing) = tokio::sync::mpsc::channel(16);
        outbox.send(hello("rogue", "rogue-host")).await?;
        let mut inbound = link.join(ReceiverStream::new(outgoing)).await?.into_inner();
        let welcome = inbound.message().await?.context("welcome")?;
        assert!(matches!(
            welcome.kind,
            Some(coordinator_message::Kind::Welcome(_))
        ));
        let capture = std::thread::spawn(move || {
            rankline(&[
                "capture",
                "--json",
                "--duration",
                "300ms",
                "--profile-id",
                profile_id,
                "--coordinator",
                &capture_url,
            ])
        });
        loop {
            let command = inbound.message().await?.context("a start command")?;
            if let Some(coordinator_message::Kind::Start(start)) = command.kind {
                assert_eq!(start.profile_id, profile_id);
                break;
            }
        }
        outbox
            .send(update(profile_id, RankState::Armed, &[]))
            .await?;
        let foreign = [
            format!("{profile_id}/../../outside.trace.json.gz"),
            format!("{profile_id}/{profile_id}-TP-0-EP-0.meta.json"),
        ];
        outbox
            .send(update(profile_id, RankState::Ok, &foreign))
            .await?;
        let ended = loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => bail!("the coordinator closed the stream without saying why"),
                Err(status) => break status,
            }
        };
        anyhow::Ok((ended, capture))
    })?;
    assert_eq!(ended.code(), tonic::Code::InvalidArgument, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("outside the rank's prefix rogue-1/rogue-1-TP-0-EP-0"),
        "{ended:?}"
    );

    let (code, stdout, stderr) = capture.join().expect("the capture thread")?;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let (_, show, _) = rankline(&[
        "capture",
        "show",
        profile_id,
        "--json",
        "--coordinator",
        &url,
    ])?;
    let summary: Value = serde_json::from_str(&show)?;
    let rank = &summary["ranks"][0];
    assert_eq!(rank["state"], "failed", "{summary:#}");
    assert!(
        rank["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("refused its agent's report"),
        "{summary:#}"
    );
    assert_eq!(rank["objects"], serde_json::json!([]), "{summary:#}");

    // Nothing outside the prefix is listed or written.
    let manifest_path = cluster.storage().join(profile_id).join("manifest.json");
    let manifest = wait_until("the manifest", Duration::from_secs(30), || {
        std::fs::read_to_string(&manifest_path).ok()
    })?;
    let manifest: Value = serde_json::from_str(&manifest)?;
    assert_eq!(
        manifest["ranks"][0]["objects"],
        serde_json::json!({}),
        "{manifest:#}"
    );
    for file in files_under(cluster.work.path()) {
        assert!(!file.contains("outside"), "{file}");
        assert!(
            file.starts_with("storage/rogue-1/")
                || file.starts_with("storage/.rankline-coordinator/"),
            "{file}"
        );
    }
    Ok(())
}

#[test]
fn a_server_that_wants_a_bearer_key_is_profiled_only_with_it() -> Result<()> {
    const KEY: &str = "sk-simulated-0123456789abcdef";
    let mut cluster = Cluster::start(&[])?;
    let key_file = cluster.work.path().join("server-api-key");
    write_private(&key_file, KEY)?;
    let server_args = |tp: &'static str| {
        [
            "--kind",
            "sglang",
            "--api-key",
            KEY,
            "--tp-size",
            "2",
            "--tp-rank",
            tp,
        ]
    };
    let keyed = cluster.add_server("keyed", &server_args("0"))?;
    let keyless = cluster.add_server("keyless", &server_args("1"))?;
    cluster.add_agent(
        "with-key",
        &keyed,
        &["-vv", "--server-api-key-file", path(&key_file)],
    )?;
    cluster.add_agent(
        "without-key",
        &keyless,
        &["--tp-rank", "1", "--kind", "sglang", "--mode", "trigger"],
    )?;
    cluster.wait_for_agents(2)?;

    let run = cluster.capture(&["--duration", "300ms"])?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let ranks = run.ranks();
    let state_of = |rank: &str| {
        ranks
            .iter()
            .find(|(name, _, _)| name.contains(rank))
            .cloned()
            .unwrap_or_else(|| panic!("no rank {rank} in {ranks:?}"))
    };
    assert_eq!(state_of("TP-0").1, "ok", "{ranks:?}");
    let (_, state, detail) = state_of("TP-1");
    assert_eq!(state, "failed");
    assert!(detail.contains("HTTP 401"), "{detail}");
    assert!(
        detail.contains("--server-api-key-file") && detail.contains("RANKLINE_SERVER_API_KEY"),
        "{detail}"
    );
    // The key itself is never logged.
    assert!(!cluster.agents[0].log_text().contains(KEY));
    Ok(())
}

#[test]
fn a_coordinator_open_beyond_loopback_says_so() -> Result<()> {
    let work = tempfile::tempdir()?;
    let storage = work.path().join("storage");
    let open = Spawn::rankline("open", &["coordinator", "--listen", "0.0.0.0:0"])
        .args(["--storage", path(&storage)])
        .wait_for_url()
        .start()?;
    let warning = wait_for_log(&open, "without authentication")?;
    assert!(warning.contains("--token-file"), "{warning}");

    let tokens = Tokens::new()?;
    let guarded = Spawn::rankline("guarded", &["coordinator", "--listen", "0.0.0.0:0"])
        .args(["--storage", path(&storage.join("guarded"))])
        .args(["--token-file", path(&tokens.table)])
        .wait_for_url()
        .start()?;
    // Once it answers, it has passed the point where it would warn.
    connected_agents(guarded.url(), &["--token-file", path(&tokens.operator)])?;
    assert!(!guarded.log_text().contains("without authentication"));
    Ok(())
}
