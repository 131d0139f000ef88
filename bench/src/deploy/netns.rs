//! Network namespaces for an ensemble (`bench/net.sh`, needs root): every member in its own
//! namespace `rb-<tag>-<i>` with address `<subnet>.<i>`, joined by a bridge, so one member can
//! be cut from the others while clients still reach it.

use std::path::{Path, PathBuf};

use super::run_script;

/// The namespaces of one ensemble, from `up` until `down`.
pub(super) struct Namespaces {
    script: PathBuf,
    tag: &'static str,
    subnet: &'static str,
    size: usize,
}

impl Namespaces {
    /// Creates `size` namespaces `rb-<tag>-1..` with addresses `<subnet>.1..`.
    pub(super) fn up(
        script: &Path,
        tag: &'static str,
        subnet: &'static str,
        size: usize,
    ) -> anyhow::Result<Namespaces> {
        let me = Namespaces {
            script: script.to_path_buf(),
            tag,
            subnet,
            size,
        };
        // A namespace left over from an interrupted run would make `up` fail.
        let _ = me.run(&["down", tag, &size.to_string()]);
        me.run(&["up", tag, &size.to_string(), subnet])?;
        Ok(me)
    }

    /// Member `i`'s address (1-based).
    pub(super) fn host(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// The namespace name prefix the cluster scripts take (`NETNS_PREFIX`).
    pub(super) fn prefix(&self) -> String {
        format!("rb-{}-", self.tag)
    }

    /// Cuts `member` from the other members (not from clients).
    pub(super) fn partition(&self, member: usize) -> anyhow::Result<()> {
        self.run(&["partition", self.tag, &member.to_string(), self.subnet])
    }

    /// Undoes [`Namespaces::partition`].
    pub(super) fn heal(&self, member: usize) -> anyhow::Result<()> {
        self.run(&["heal", self.tag, &member.to_string()])
    }

    /// Removes the namespaces.
    pub(super) fn down(&self) -> anyhow::Result<()> {
        self.run(&["down", self.tag, &self.size.to_string()])
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        run_script(&self.script, args, &[])
    }
}
