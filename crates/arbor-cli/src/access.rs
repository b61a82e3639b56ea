//! Which commands write where: on a booted machine `/sysroot` (and so
//! `/ostree/repo`) is read-only, and [`crate::cmds::dispatch`] makes the
//! path a command writes writable in a private mount namespace first.

use crate::cli::Cmd;

/// What a command may change on a booted machine, whose `/sysroot` (and
/// so `/ostree/repo`) is mounted read-only: [`crate::cmds::dispatch`] makes the path
/// writable in a private mount namespace first
/// ([`arbor_sysroot::writable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access<'a> {
    /// Writes nothing there: reads, checks, dry runs that take no lock,
    /// output to a file or directory the user names.
    Reads,
    /// Writes to this repository, or creates it or a sysroot there.
    WritesRepo(&'a std::path::Path),
    /// Changes this sysroot (or takes its lock, which needs it writable).
    WritesSysroot(&'a std::path::Path),
}

/// The [`Access`] of a command. Exhaustive on purpose: a new subcommand
/// does not build until it is classified (and the test
/// `every_subcommand_is_classified` names it too).
pub(crate) fn access(cmd: &Cmd) -> Access<'_> {
    use crate::cli::RemoteCmd;
    use crate::cli_agent::AgentCmd;
    use crate::cli_config::ConfigCmd;
    use crate::cli_extension::ExtensionCmd;
    use crate::cli_health::HealthCmd;
    use crate::cli_sysroot::AdminCmd;
    use Access::{Reads, WritesRepo, WritesSysroot};
    match cmd {
        Cmd::Init(o) => WritesRepo(&o.repo.repo),
        Cmd::Commit(o) => WritesRepo(&o.repo.repo),
        Cmd::Refs(o) if o.create.is_some() || o.delete => WritesRepo(&o.repo.repo),
        // --no-prune takes the shared lock and deletes nothing.
        Cmd::Prune(o) if o.no_prune => Reads,
        Cmd::Prune(o) => WritesRepo(&o.repo.repo),
        Cmd::PullLocal(o) => WritesRepo(&o.repo.repo),
        Cmd::Pull(o) => WritesRepo(&o.repo.repo),
        Cmd::Remote(RemoteCmd::Add(o)) => WritesRepo(&o.repo.repo),
        Cmd::Remote(RemoteCmd::Delete(o)) => WritesRepo(&o.repo.repo),
        Cmd::Sign(o) if !o.verify => WritesRepo(&o.repo.repo),
        Cmd::Summary(o) if o.update => WritesRepo(&o.repo.repo),
        Cmd::Extension(ExtensionCmd::Compose(o)) => WritesRepo(&o.repo.repo),
        Cmd::Quickstart(o) => WritesRepo(&o.dir),
        Cmd::Admin(AdminCmd::InitFs(o)) => WritesRepo(&o.dir),
        Cmd::Refs(_)
        | Cmd::Sign(_)
        | Cmd::Summary(_)
        | Cmd::Checkout(_)
        | Cmd::Log(_)
        | Cmd::Show(_)
        | Cmd::Ls(_)
        | Cmd::Cat(_)
        | Cmd::Export(_)
        | Cmd::RevParse(_)
        | Cmd::Diff(_)
        | Cmd::Fsck(_)
        | Cmd::Serve(_)
        | Cmd::Remote(
            RemoteCmd::List(_) | RemoteCmd::Show(_) | RemoteCmd::ShowUrl(_) | RemoteCmd::Refs(_),
        )
        | Cmd::Status(_)
        | Cmd::Config(ConfigCmd::Render(_))
        | Cmd::Extension(ExtensionCmd::List(_))
        | Cmd::Generate(_)
        // Reads the repository, builds in (and writes) its output only.
        | Cmd::Image(_)
        // Talks to etcd or a FleetLock server; no repository or sysroot.
        | Cmd::Fleetlock(_)
        // Reads the agent's configuration.
        | Cmd::Agent(AgentCmd::Config(_))
        // Runs the health checks; they may write, arbor does not.
        | Cmd::Health(HealthCmd::Check(_))
        // At boot, in the initramfs: mounts, writes no repository.
        | Cmd::PrepareRoot(_) => Reads,
        Cmd::Admin(AdminCmd::OsInit(o)) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Admin(AdminCmd::GrubConfig(o)) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Admin(AdminCmd::LockFinalization(o)) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Deploy(o) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Cleanup(o) => WritesSysroot(&o.sysroot.sysroot),
        // --check reads the remote's summary, takes no lock.
        Cmd::Upgrade(o) if o.check => Reads,
        Cmd::Upgrade(o) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Switch(o) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Rollback(o) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Undeploy(o) | Cmd::Pin(o) | Cmd::Unpin(o) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Kargs(o) if o.append.is_empty() && o.replace.is_empty() && o.delete.is_empty() => {
            Reads
        }
        Cmd::Kargs(o) => WritesSysroot(&o.sysroot.sysroot),
        // Even a dry run merges /etc for real, in a scratch directory of
        // the repository's tmp/ (under the exclusive lock: it removes the
        // scratch directories of killed previews).
        Cmd::Config(ConfigCmd::Apply(o)) => WritesSysroot(&o.sysroot.sysroot),
        // Even a dry run imports a directory or tar source into the
        // repository (to know its commit), and removes its refs after.
        Cmd::Extension(ExtensionCmd::Add(o)) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Extension(ExtensionCmd::Remove(o)) => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Drift(o) if o.revert => WritesSysroot(&o.sysroot.sysroot),
        Cmd::Drift(_) => Reads,
        Cmd::Finalize(o) | Cmd::BootComplete(o) => WritesSysroot(&o.sysroot.sysroot),
        // Stages updates and unlocks their finalization.
        Cmd::Agent(AgentCmd::Run(o)) => WritesSysroot(&o.sysroot.sysroot),
        // Rolls back, and writes the boot counter in /boot.
        Cmd::Health(HealthCmd::Boot(o)) => WritesSysroot(&o.sysroot.sysroot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Opt;

    /// Every subcommand path (`extension compose`), hidden ones too.
    fn leaf_paths(c: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let mut any = false;
        for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
            any = true;
            let path = format!("{prefix} {}", sub.get_name());
            leaf_paths(sub, path.trim_start(), out);
        }
        if !any && !prefix.is_empty() {
            out.push(prefix.to_string());
        }
    }

    #[test]
    fn every_subcommand_is_classified() {
        use clap::{CommandFactory, Parser};
        // (subcommand, arguments, access: r reads, p writes a repository,
        // s writes a sysroot). A subcommand missing here fails the test.
        let table: &[(&str, &[&str], char)] = &[
            ("init", &["--repo=/r"], 'p'),
            ("commit", &["--repo=/r", "/t"], 'p'),
            ("checkout", &["--repo=/r", "x", "/d"], 'r'),
            ("log", &["--repo=/r", "x"], 'r'),
            ("show", &["--repo=/r", "x"], 'r'),
            ("ls", &["--repo=/r", "x"], 'r'),
            ("cat", &["--repo=/r", "x", "/f"], 'r'),
            ("export", &["--repo=/r", "x"], 'r'),
            ("refs", &["--repo=/r"], 'r'),
            ("refs", &["--repo=/r", "--create=a", "x"], 'p'),
            ("refs", &["--repo=/r", "--delete", "a"], 'p'),
            ("rev-parse", &["--repo=/r", "x"], 'r'),
            ("diff", &["--repo=/r", "x", "y"], 'r'),
            ("fsck", &["--repo=/r"], 'r'),
            ("prune", &["--repo=/r"], 'p'),
            ("prune", &["--repo=/r", "--no-prune"], 'r'),
            ("pull-local", &["--repo=/r", "/s"], 'p'),
            ("pull", &["--repo=/r", "o"], 'p'),
            ("remote add", &["--repo=/r", "o", "http://h/"], 'p'),
            ("remote list", &["--repo=/r"], 'r'),
            ("remote show", &["--repo=/r", "o"], 'r'),
            ("remote show-url", &["--repo=/r", "o"], 'r'),
            ("remote delete", &["--repo=/r", "o"], 'p'),
            ("remote refs", &["--repo=/r", "o"], 'r'),
            ("serve", &["--repo=/r"], 'r'),
            ("sign", &["--repo=/r", "x", "k"], 'p'),
            ("sign", &["--repo=/r", "--verify", "x"], 'r'),
            ("summary", &["--repo=/r", "-u"], 'p'),
            ("summary", &["--repo=/r", "-v"], 'r'),
            ("quickstart", &["/q"], 'p'),
            ("admin init-fs", &["/d"], 'p'),
            ("admin os-init", &["os"], 's'),
            ("admin grub-config", &[], 's'),
            ("admin lock-finalization", &[], 's'),
            ("deploy", &["x"], 's'),
            ("status", &[], 'r'),
            ("cleanup", &[], 's'),
            ("upgrade", &[], 's'),
            ("upgrade", &["--check"], 'r'),
            ("upgrade", &["--download-only"], 's'),
            ("switch", &["x"], 's'),
            ("rollback", &[], 's'),
            ("undeploy", &["1"], 's'),
            ("pin", &["1"], 's'),
            ("unpin", &["1"], 's'),
            ("kargs", &[], 'r'),
            ("kargs", &["--append=a"], 's'),
            ("config render", &[], 'r'),
            ("config apply", &["/c"], 's'),
            ("config apply", &["--dry-run", "/c"], 's'),
            ("extension add", &["x"], 's'),
            ("extension add", &["--dry-run", "x"], 's'),
            ("extension remove", &["x"], 's'),
            ("extension list", &[], 'r'),
            ("extension compose", &["--repo=/r", "base", "x"], 'p'),
            ("drift", &[], 'r'),
            ("drift", &["--revert"], 's'),
            ("finalize", &[], 's'),
            ("boot-complete", &[], 's'),
            ("prepare-root", &["/root"], 'r'),
            ("generate man", &["/d"], 'r'),
            (
                "image build",
                &["--repo=/r", "--format=raw", "-o", "/o", "x"],
                'r',
            ),
            ("generate completions", &["bash", "/d"], 'r'),
            ("fleetlock serve", &["--etcd=http://e"], 'r'),
            ("agent config", &[], 'r'),
            ("agent run", &[], 's'),
            ("health check", &[], 'r'),
            ("health boot", &[], 's'),
            ("fleetlock status", &["--etcd=http://e"], 'r'),
            ("fleetlock release", &["--etcd=http://e", "id"], 'r'),
            ("fleetlock pre-reboot", &["--url=http://s"], 'r'),
            ("fleetlock steady-state", &["--url=http://s"], 'r'),
        ];
        let mut leaves = Vec::new();
        leaf_paths(&Opt::command(), "", &mut leaves);
        leaves.sort();
        let mut listed: Vec<String> = table.iter().map(|(p, _, _)| p.to_string()).collect();
        listed.sort();
        listed.dedup();
        assert_eq!(
            leaves, listed,
            "classify every subcommand (reads or writes) in access() and in this table"
        );
        for (path, args, want) in table {
            let argv = std::iter::once("arbor")
                .chain(path.split(' '))
                .chain(args.iter().copied());
            let opt =
                Opt::try_parse_from(argv).unwrap_or_else(|e| panic!("arbor {path} {args:?}: {e}"));
            let got = match access(&opt.cmd) {
                Access::Reads => 'r',
                Access::WritesRepo(_) => 'p',
                Access::WritesSysroot(_) => 's',
            };
            assert_eq!(got, *want, "arbor {path} {args:?}");
        }
    }
}
