//! Another "host" for end-to-end tests: a network namespace joined to the
//! test's own by a veth pair, with its own loopback. Its link can be cut
//! and restored from the outside, as a failing switch port would: packets
//! are dropped silently, so the processes inside see stalls and timeouts,
//! not refused connections. Needs root (`ip netns`); the namespace and its
//! link are removed when the [`NetHost`] is dropped.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::Spawn;

/// Namespaces made by this test process, for unique names and subnets.
static MADE: AtomicU32 = AtomicU32::new(0);

/// One network namespace and the link that joins it to the test's.
pub struct NetHost {
    namespace: String,
    outside_link: String,
    /// The address of the test's side of the link: what processes inside
    /// dial to reach servers of the test's namespace (bound to 0.0.0.0).
    pub gateway_ip: String,
}

impl NetHost {
    /// Makes a namespace with its loopback up and a /30 link to this one.
    pub fn create() -> Result<NetHost> {
        let serial = MADE.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{serial}", std::process::id() % 100_000);
        // A /30 per namespace: the pid spreads test processes apart.
        let prefix = format!("10.{}.{}", std::process::id() % 200 + 20, serial % 64);
        // Interface names have at most 15 bytes.
        let inside_link = format!("rli{tag}");
        let inside_ip = format!("{prefix}.2");
        let host = NetHost {
            namespace: format!("rankline-{tag}"),
            outside_link: format!("rlo{tag}"),
            gateway_ip: format!("{prefix}.1"),
        };
        ip(&["netns", "add", &host.namespace])
            .context("make a network namespace (the test needs root and iproute2)")?;
        let ns = host.namespace.as_str();
        ip(&[
            "link",
            "add",
            &host.outside_link,
            "type",
            "veth",
            "peer",
            "name",
            &inside_link,
        ])?;
        ip(&["link", "set", &inside_link, "netns", ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", host.gateway_ip),
            "dev",
            &host.outside_link,
        ])?;
        ip(&["link", "set", &host.outside_link, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{inside_ip}/30"),
            "dev",
            &inside_link,
        ])?;
        ip(&["-n", ns, "link", "set", &inside_link, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &host.gateway_ip])?;
        Ok(host)
    }

    /// Runs `spawn` inside this namespace.
    pub fn spawn(&self, spawn: Spawn) -> Spawn {
        spawn.wrapped(&["ip", "netns", "exec", &self.namespace])
    }

    /// Takes the link down on the outside: nothing goes in or out.
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.outside_link, "down"])
    }

    /// Brings the link back up.
    pub fn restore(&self) -> Result<()> {
        ip(&["link", "set", &self.outside_link, "up"])
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with
        // it the outside end.
        ip(&["netns", "del", &self.namespace]).ok();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
