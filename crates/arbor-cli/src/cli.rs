//! Command-line definitions. Flags follow `ostree`'s names so its users'
//! habits carry over (`--repo`, `-b`, `-s`, `--tree`-less positional dir...).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// arbor: image-based, transactional OS updates, compatible with OSTree.
#[derive(Debug, Parser)]
#[command(name = "arbor", version, about)]
pub struct Opt {
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `--repo PATH`, shared by repository commands.
#[derive(Debug, Args, Clone)]
pub struct RepoArg {
    /// Path to the repository.
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a repository.
    Init(InitOpts),
    /// Commit a directory tree or a tar stream.
    Commit(CommitOpts),
    /// Check out a commit into a directory.
    Checkout(CheckoutOpts),
    /// Show the history of a ref.
    Log(RevOpts),
    /// Show one commit.
    Show(RevOpts),
    /// List a path in a commit.
    Ls(LsOpts),
    /// Print a file of a commit to stdout.
    Cat(CatOpts),
    /// Write a commit as a tar stream (owners, modes, xattrs as PAX
    /// records; byte-stable; `commit --tar` of it gives the same tree).
    Export(ExportOpts),
    /// List, create or delete refs.
    Refs(RefsOpts),
    /// Print the checksum a revision resolves to.
    RevParse(RevOpts),
    /// Compare two commits.
    Diff(DiffOpts),
    /// Verify every object and that every commit is complete.
    Fsck(FsckOpts),
    /// Delete unreachable objects.
    Prune(PruneOpts),
    /// Copy commits from another local repository (any mode), verified.
    PullLocal(PullLocalOpts),
    /// Fetch commits from a remote over HTTP(S), verifying every object.
    Pull(PullOpts),
    /// Manage remotes (stored in the repository config, as ostree does).
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Serve an archive repository over HTTP (for development and tests).
    Serve(ServeOpts),
    /// Sign a commit with ed25519 keys, or verify its signatures.
    Sign(SignOpts),
    /// Update (-u) or view (-v) the repository summary.
    Summary(SummaryOpts),
    /// Run a self-contained demonstration in DIR (no root needed).
    Quickstart(QuickstartOpts),
    /// Sysroot administration (init-fs, os-init).
    #[command(subcommand)]
    Admin(crate::cli_sysroot::AdminCmd),
    /// Deploy a commit as the new default boot entry.
    Deploy(crate::cli_sysroot::DeployOpts),
    /// Show the deployments of a sysroot.
    Status(crate::cli_sysroot::StatusOpts),
    /// Remove unused deployments, boot files and repository objects.
    Cleanup(crate::cli_sysroot::CleanupOpts),
    /// Pull the origin's ref and deploy it if it changed.
    Upgrade(crate::cli_sysroot::UpgradeOpts),
    /// Deploy another ref and follow it from now on.
    Switch(crate::cli_sysroot::SwitchOpts),
    /// Make the rollback deployment the default.
    Rollback(crate::cli_sysroot::RollbackOpts),
    /// Remove a deployment.
    Undeploy(crate::cli_sysroot::IndexOpts),
    /// Keep a deployment even when newer ones are deployed.
    Pin(crate::cli_sysroot::IndexOpts),
    /// Undo `pin`.
    Unpin(crate::cli_sysroot::IndexOpts),
    /// Show or change a deployment's kernel arguments.
    Kargs(crate::cli_sysroot::KargsOpts),
    /// Declared configuration (Ignition v3 / MachineConfig): render, apply.
    #[command(subcommand)]
    Config(crate::cli_config::ConfigCmd),
    /// Extensions: a base commit plus an explicit list of extra trees,
    /// composed at the object level and re-applied on every upgrade.
    #[command(subcommand)]
    Extension(crate::cli_extension::ExtensionCmd),
    /// Show what a deployment holds that its base commit and configuration
    /// do not declare (exit status 0: clean, 1: drift, 2: error).
    Drift(crate::drift_cmd::DriftOpts),
    /// Complete a staged deployment (run at shutdown by arbor-finalize-staged.service).
    Finalize(crate::cli_sysroot::FinalizeOpts),
    /// Report (once) a finalization that failed at the previous shutdown
    /// (run at boot by arbor-boot-complete.service).
    BootComplete(crate::cli_sysroot::FinalizeOpts),
    /// Disk images built from a commit.
    #[command(subcommand)]
    Image(crate::cli_image::ImageCmd),
    /// Reboot coordination (the FleetLock protocol): server on etcd,
    /// operator commands, client requests.
    #[command(subcommand)]
    Fleetlock(crate::cli_fleetlock::FleetlockCmd),
    /// The update agent.
    #[command(subcommand)]
    Agent(crate::cli_agent::AgentCmd),
    /// Health checks after boot (greenboot's model).
    #[command(subcommand)]
    Health(crate::cli_health::HealthCmd),
    /// Generate man pages or shell completions from this definition
    /// (for packaging: dist/install.sh).
    #[command(subcommand, hide = true)]
    Generate(crate::generate::GenerateCmd),
    /// Boot-time root setup (in the initramfs): make the deployment named
    /// by ostree= on the kernel command line the new root at SYSROOT, as
    /// ostree-prepare-root does (also the static binary arbor-prepare-root).
    PrepareRoot(crate::cli_sysroot::PrepareRootOpts),
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Revision: a ref, `REMOTE:REF`, a checksum or a unique checksum prefix, optionally
    /// with ^ suffixes.
    pub rev: String,
    /// Where to write the tar stream: a file (written under a temporary
    /// name, then renamed), or "-" for stdout.
    #[arg(short = 'o', long, value_name = "FILE|-", default_value = "-")]
    pub output: PathBuf,
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Address to listen on; port 0 picks a free port (the first line of
    /// output names the URL).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub addr: String,
}

/// `sign`, following `ostree sign`.
#[derive(Debug, Args)]
pub struct SignOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Verify the commit's signatures; KEYs are then public keys.
    #[arg(long)]
    pub verify: bool,
    /// Signature type (only ed25519).
    #[arg(short = 's', long, default_value = "ed25519", value_name = "NAME")]
    pub sign_type: String,
    /// Read keys from FILE: one base64 key per line (or PEM).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// With --verify and no key: read trusted.ed25519[.d] and
    /// revoked.ed25519[.d] from DIR instead of /etc/ostree and /usr/share/ostree.
    #[arg(long, value_name = "DIR", requires = "verify")]
    pub keys_dir: Option<PathBuf>,
    /// Commit to sign or verify (ref, checksum or unique checksum prefix).
    pub commit: String,
    /// Secret keys (base64) to sign with; with --verify, public keys.
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,
}

/// `summary`, following `ostree summary`.
#[derive(Debug, Args)]
pub struct SummaryOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Regenerate the summary from the current refs.
    #[arg(short = 'u', long, conflicts_with = "view")]
    pub update: bool,
    /// Print the current summary.
    #[arg(short = 'v', long)]
    pub view: bool,
    /// With -u: sign the summary with this secret key (base64; repeatable).
    #[arg(long = "sign-key", visible_alias = "sign", value_name = "KEY")]
    pub sign_key: Vec<String>,
    /// With -u: sign with the secret keys in FILE.
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// Signature type (only ed25519).
    #[arg(long, default_value = "ed25519", value_name = "NAME")]
    pub sign_type: String,
    /// With -u: extra metadata KEY=VALUE, VALUE in GVariant text ('str', true, 42, uint64 7).
    #[arg(short = 'm', long = "add-metadata", value_name = "KEY=VALUE")]
    pub add_metadata: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `pull-local`.
#[derive(Debug, Args)]
pub struct PullLocalOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Store refs under refs/remotes/REMOTE/.
    #[arg(long)]
    pub remote: Option<String>,
    /// Parents to pull (-1 = all).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub depth: i64,
    /// Do not verify commit bindings.
    #[arg(long)]
    pub disable_verify_bindings: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Source repository.
    pub src: std::path::PathBuf,
    /// Refs to pull (default: all local refs of the source).
    pub refs: Vec<String>,
}

/// `pull`.
#[derive(Debug, Args)]
pub struct PullOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Parents to pull (-1 = all).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub depth: i64,
    /// Fetch only the commit objects (marked partial).
    #[arg(long)]
    pub commit_metadata_only: bool,
    /// Write refs/heads/ (not refs/remotes/REMOTE/) and keep the remote's
    /// summary: a copy to serve again (use an archive repository).
    #[arg(long)]
    pub mirror: bool,
    /// Fetch only metadata and print the objects and bytes that would be fetched.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow moving a ref to an older commit.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Do not verify commit bindings.
    #[arg(long)]
    pub disable_verify_bindings: bool,
    /// Objects in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Remote name (see `remote add`).
    pub remote: String,
    /// Refs or commit checksums to pull (default: every ref in the remote's summary).
    pub refs: Vec<String>,
}

/// `remote` subcommands.
#[derive(Debug, Subcommand)]
pub enum RemoteCmd {
    /// Add a remote.
    Add(RemoteAddOpts),
    /// List remotes.
    List(RemoteListOpts),
    /// Show a remote's configuration.
    Show(RemoteNameOpts),
    /// Print a remote's URL.
    ShowUrl(RemoteNameOpts),
    /// Delete a remote.
    Delete(RemoteDeleteOpts),
    /// List the refs the remote's summary offers.
    Refs(RemoteNameOpts),
}

/// `remote add`.
#[derive(Debug, Args)]
pub struct RemoteAddOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Set config option KEY=VALUE for the remote (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Disable GPG verification.
    #[arg(long)]
    pub no_gpg_verify: bool,
    /// Disable signature verification.
    #[arg(long)]
    pub no_sign_verify: bool,
    /// Verify signatures with TYPE=inline:PUBKEY or TYPE=file:PATH (ed25519).
    #[arg(long, value_name = "TYPE=inline:KEY|TYPE=file:PATH")]
    pub sign_verify: Vec<String>,
    /// Do nothing if the remote exists.
    #[arg(long)]
    pub if_not_exists: bool,
    /// Replace the remote if it exists.
    #[arg(long)]
    pub force: bool,
    /// Remote name.
    pub name: String,
    /// Remote URL.
    pub url: String,
}

/// `remote list`.
#[derive(Debug, Args)]
pub struct RemoteListOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Show URLs too.
    #[arg(short = 'u', long = "show-urls")]
    pub show_urls: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `remote show` / `remote show-url`.
#[derive(Debug, Args)]
pub struct RemoteNameOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Remote name.
    pub name: String,
}

/// `remote delete`.
#[derive(Debug, Args)]
pub struct RemoteDeleteOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Do nothing if the remote does not exist.
    #[arg(long)]
    pub if_exists: bool,
    /// Remote name.
    pub name: String,
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// archive (alias archive-z2), bare, bare-user or bare-user-only.
    #[arg(long, default_value = "bare")]
    pub mode: String,
    /// Collection ID (reverse DNS) recorded in the config and bound into commits.
    #[arg(long)]
    pub collection_id: Option<String>,
}

/// `commit`.
#[derive(Debug, Args)]
pub struct CommitOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Branch to commit to (the last one wins, as in ostree).
    #[arg(short = 'b', long, overrides_with = "branch")]
    pub branch: Option<String>,
    /// One-line subject.
    #[arg(short = 's', long)]
    pub subject: Option<String>,
    /// Full description.
    #[arg(long)]
    pub body: Option<String>,
    /// Commit time: @SECONDS or RFC 3339 (default: SOURCE_DATE_EPOCH or now).
    #[arg(long)]
    pub timestamp: Option<String>,
    /// Add KEY=VALUE string metadata (repeatable, kept in order).
    #[arg(long = "add-metadata-string", value_name = "KEY=VALUE")]
    pub add_metadata_string: Vec<String>,
    /// Set every file's owner uid.
    #[arg(long)]
    pub owner_uid: Option<u32>,
    /// Set every file's owner gid.
    #[arg(long)]
    pub owner_gid: Option<u32>,
    /// uid/gid 0, modes masked to 0755, no xattrs.
    #[arg(long)]
    pub canonical_permissions: bool,
    /// Do not record the branch in ostree.ref-binding.
    #[arg(long)]
    pub no_bindings: bool,
    /// Read the tree from a tar file ("-" for stdin) instead of a directory.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["path", "tree"])]
    pub tar: Option<PathBuf>,
    /// ostree's spelling of the source: `dir=PATH` or `tar=FILE`.
    #[arg(long, value_name = "dir=PATH|tar=FILE", conflicts_with = "path")]
    pub tree: Option<String>,
    /// Don't sync data before publishing (faster, not crash safe).
    #[arg(long)]
    pub fsync: Option<bool>,
    /// Sign the commit with this ed25519 secret key (base64; repeatable).
    #[arg(long = "sign-key", visible_alias = "sign", value_name = "KEY")]
    pub sign_key: Vec<String>,
    /// Signature type for --sign-key (only ed25519).
    #[arg(long, default_value = "ed25519", value_name = "NAME")]
    pub sign_type: String,
    /// The directory to commit.
    #[arg(required_unless_present_any = ["tar", "tree"])]
    pub path: Option<PathBuf>,
}

/// `checkout`.
#[derive(Debug, Args)]
pub struct CheckoutOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Hardlink files from the repository, as ostree's --require-hardlinks:
    /// a bare repository without -U or a bare-user(-only) one with -U (empty
    /// files are copied); other modes, and a destination on another
    /// filesystem (EXDEV), are errors.
    #[arg(short = 'H', long)]
    pub hardlink: bool,
    /// Do not change ownership or set extended attributes.
    #[arg(short = 'U', long)]
    pub user_mode: bool,
    /// Check out into an existing non-empty directory, replacing files.
    #[arg(long)]
    pub union: bool,
    /// Only check out this path of the commit.
    #[arg(long)]
    pub subpath: Option<String>,
    /// Revision to check out: a ref, `REMOTE:REF`, a checksum or a unique checksum prefix, optionally
    /// with ^ suffixes.
    pub rev: String,
    /// Destination directory.
    pub dest: PathBuf,
}

/// Commands taking one revision.
#[derive(Debug, Args)]
pub struct RevOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Revision: a ref, `REMOTE:REF`, a checksum or a unique checksum prefix, optionally
    /// with ^ suffixes.
    pub rev: String,
}

/// `ls`.
#[derive(Debug, Args)]
pub struct LsOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Show checksums.
    #[arg(short = 'C', long)]
    pub checksum: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Revision: a ref, `REMOTE:REF`, a checksum or a unique checksum prefix, optionally
    /// with ^ suffixes.
    pub rev: String,
    /// Paths inside the commit (default /).
    pub paths: Vec<String>,
}

/// `cat`.
#[derive(Debug, Args)]
pub struct CatOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Revision: a ref, `REMOTE:REF`, a checksum or a unique checksum prefix, optionally
    /// with ^ suffixes.
    pub rev: String,
    /// File paths inside the commit.
    #[arg(required = true)]
    pub paths: Vec<String>,
}

/// `refs`.
#[derive(Debug, Args)]
pub struct RefsOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Create ref NAME pointing at REV.
    #[arg(long, value_name = "NAME", requires = "rev")]
    pub create: Option<String>,
    /// Delete the given refs.
    #[arg(long)]
    pub delete: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// With --create: the target revision; with --delete: refs to delete;
    /// otherwise: prefixes to filter the listing.
    pub rev: Vec<String>,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Old revision (ref, checksum or unique checksum prefix).
    pub from: String,
    /// New revision (ref, checksum or unique checksum prefix).
    pub to: String,
}

/// `fsck`.
#[derive(Debug, Args)]
pub struct FsckOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Only print errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Only refs keep commits alive.
    #[arg(long)]
    pub refs_only: bool,
    /// Parent commits to keep behind each ref (-1 = all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub depth: i64,
    /// Prune history older than DATE (@SECONDS, RFC 3339, YYYY-MM-DD or "N days ago").
    #[arg(long, value_name = "DATE")]
    pub keep_younger_than: Option<String>,
    /// Only report what would be deleted.
    #[arg(long)]
    pub no_prune: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartOpts {
    /// Directory to work in (created; must be empty or absent).
    #[arg(default_value = "arbor-quickstart")]
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ostree_style_flags() {
        let o = Opt::try_parse_from([
            "arbor",
            "commit",
            "--repo",
            "r",
            "-b",
            "os/x",
            "-s",
            "subj",
            "--timestamp=@5",
            "--add-metadata-string",
            "version=1",
            "--add-metadata-string=a=b",
            "--owner-uid=0",
            "--canonical-permissions",
            "tree",
        ])
        .unwrap();
        let Cmd::Commit(c) = o.cmd else {
            panic!("not commit")
        };
        assert_eq!(c.branch.as_deref(), Some("os/x"));
        assert_eq!(c.add_metadata_string, vec!["version=1", "a=b"]);
        assert_eq!(c.owner_uid, Some(0));
        assert!(c.canonical_permissions);
        assert_eq!(c.path, Some(PathBuf::from("tree")));
    }

    #[test]
    fn commit_needs_a_source() {
        assert!(Opt::try_parse_from(["arbor", "commit", "--repo", "r", "-b", "x"]).is_err());
        assert!(Opt::try_parse_from(["arbor", "commit", "--repo=r", "--tar", "-"]).is_ok());
        assert!(Opt::try_parse_from(["arbor", "commit", "--repo=r", "--tar", "-", "dir"]).is_err());
        assert!(Opt::try_parse_from(["arbor", "commit", "--repo=r", "--tree=dir=x"]).is_ok());
        assert!(Opt::try_parse_from(["arbor", "commit", "--repo=r", "--tree=dir=x", "y"]).is_err());
    }

    #[test]
    fn sign_and_summary_flags() {
        let o = Opt::try_parse_from([
            "arbor",
            "sign",
            "--repo=r",
            "--verify",
            "--keys-file",
            "f",
            "main",
            "K1",
            "K2",
        ])
        .unwrap();
        let Cmd::Sign(s) = o.cmd else { panic!() };
        assert!(s.verify);
        assert_eq!(s.sign_type, "ed25519");
        assert_eq!(s.keys, ["K1", "K2"]);
        assert!(Opt::try_parse_from(["arbor", "sign", "--repo=r", "--keys-dir=d", "c"]).is_err());
        let o = Opt::try_parse_from([
            "arbor",
            "summary",
            "--repo=r",
            "-u",
            "--sign=A",
            "--sign-key",
            "B",
            "-m",
            "k='v'",
        ])
        .unwrap();
        let Cmd::Summary(s) = o.cmd else { panic!() };
        assert!(s.update && !s.view);
        assert_eq!(s.sign_key, ["A", "B"]);
        assert_eq!(s.add_metadata, ["k='v'"]);
        assert!(Opt::try_parse_from(["arbor", "summary", "--repo=r", "-u", "-v"]).is_err());
        let o = Opt::try_parse_from(["arbor", "commit", "--repo=r", "--sign=K", "d"]).unwrap();
        let Cmd::Commit(c) = o.cmd else { panic!() };
        assert_eq!(c.sign_key, ["K"]);
    }

    #[test]
    fn checkout_and_prune_flags() {
        let o = Opt::try_parse_from([
            "arbor",
            "checkout",
            "--repo=r",
            "-H",
            "-U",
            "--union",
            "--subpath",
            "/usr",
            "main",
            "d",
        ])
        .unwrap();
        let Cmd::Checkout(c) = o.cmd else { panic!() };
        assert!(c.hardlink && c.user_mode && c.union);
        let o = Opt::try_parse_from(["arbor", "prune", "--repo=r", "--refs-only", "--depth", "0"])
            .unwrap();
        let Cmd::Prune(p) = o.cmd else { panic!() };
        assert_eq!(p.depth, 0);
        assert!(p.refs_only);
        let o = Opt::try_parse_from(["arbor", "prune", "--repo=r", "--depth=-1"]).unwrap();
        let Cmd::Prune(p) = o.cmd else { panic!() };
        assert_eq!(p.depth, -1);
    }

    #[test]
    fn serve_flags() {
        let o = Opt::try_parse_from(["arbor", "serve", "--repo=r"]).unwrap();
        let Cmd::Serve(s) = o.cmd else { panic!() };
        assert_eq!(s.addr, "127.0.0.1:8080");
        assert_eq!(s.repo.repo, PathBuf::from("r"));
        let o = Opt::try_parse_from(["arbor", "serve", "--repo=r", "--addr", "[::1]:0"]).unwrap();
        let Cmd::Serve(s) = o.cmd else { panic!() };
        assert_eq!(s.addr, "[::1]:0");
        assert!(Opt::try_parse_from(["arbor", "serve"]).is_err());
    }
}
