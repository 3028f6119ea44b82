//! Network namespaces for the chaos suite's partition: two namespaces `a` and `b`, each joined
//! to the root namespace by its own veth pair (clients and the nameserver in the root namespace
//! reach both) and to each other by a third (the master–slave link). A partition takes that
//! link down in both namespaces; healing brings it up again. Needs root and `ip`; everything
//! made is removed when the value drops, also when a test fails.

use std::process::Command;

use crate::disk_full::run;

/// Two namespaces and their links. Addresses, with `n` = 100 + PID % 100:
/// root–a 10.n.1.1 / 10.n.1.2, root–b 10.n.2.1 / 10.n.2.2, a–b 10.n.3.1 / 10.n.3.2.
pub struct NetPair {
    pub ns: [String; 2],
    net: u32,
    link: [String; 2],
}

impl NetPair {
    /// Makes them; `Err` says why it cannot (not root, no `ip`, …), after undoing what was made.
    pub fn new() -> Result<NetPair, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: network namespaces need root".into());
        }
        let pid = std::process::id();
        let tag = format!("rq{pid}");
        let pair = NetPair {
            ns: [format!("{tag}a"), format!("{tag}b")],
            net: 100 + pid % 100,
            link: [format!("{tag}ab"), format!("{tag}ba")],
        };
        pair.build().map(|()| pair)
    }

    fn build(&self) -> Result<(), String> {
        let n = self.net;
        for (i, ns) in self.ns.iter().enumerate() {
            run("ip", &["netns", "add", ns])?;
            let (outside, inside) = (format!("{ns}o"), format!("{ns}i"));
            let peer = ["peer", "name", &inside, "netns", ns];
            run(
                "ip",
                &[&["link", "add", &outside, "type", "veth"][..], &peer].concat(),
            )?;
            let root_side = format!("10.{n}.{}.1/24", i + 1);
            run("ip", &["addr", "add", &root_side, "dev", &outside])?;
            run("ip", &["link", "set", &outside, "up"])?;
            let ns_side = format!("10.{n}.{}.2/24", i + 1);
            self.exec(i, &["ip", "addr", "add", &ns_side, "dev", &inside])?;
            self.exec(i, &["ip", "link", "set", &inside, "up"])?;
            self.exec(i, &["ip", "link", "set", "lo", "up"])?;
        }
        let peer = ["peer", "name", &self.link[1], "netns", &self.ns[1]];
        let add = ["link", "add", &self.link[0], "type", "veth"];
        self.exec(0, &[&["ip"][..], &add, &peer].concat())?;
        for i in 0..2 {
            let addr = format!("10.{n}.3.{}/24", i + 1);
            self.exec(i, &["ip", "addr", "add", &addr, "dev", &self.link[i]])?;
        }
        self.heal()
    }

    /// Runs `argv` inside namespace `i`.
    fn exec(&self, i: usize, argv: &[&str]) -> Result<(), String> {
        run("ip", &[&["netns", "exec", &self.ns[i]][..], argv].concat())
    }

    /// Namespace `i`'s address on its link to the root namespace.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.{}.2", self.net, i + 1)
    }

    /// The root namespace's address on namespace `i`'s link.
    pub fn root_addr(&self, i: usize) -> String {
        format!("10.{}.{}.1", self.net, i + 1)
    }

    /// Namespace `i`'s address on the a–b link.
    pub fn link_addr(&self, i: usize) -> String {
        format!("10.{}.3.{}", self.net, i + 1)
    }

    /// Cuts the a–b link (both ends down).
    pub fn partition(&self) -> Result<(), String> {
        for i in 0..2 {
            self.exec(i, &["ip", "link", "set", &self.link[i], "down"])?;
        }
        Ok(())
    }

    /// Restores the a–b link.
    pub fn heal(&self) -> Result<(), String> {
        for i in 0..2 {
            self.exec(i, &["ip", "link", "set", &self.link[i], "up"])?;
        }
        Ok(())
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and with them their peers.
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
