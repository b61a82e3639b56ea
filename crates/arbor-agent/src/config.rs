//! The agent's configuration, in Zincati's format: TOML fragments from
//! `/usr/lib/arbor/agent.d`, `/etc/arbor/agent.d` and `/run/arbor/agent.d`
//! ordered by file name (a name in a later directory replaces it in an
//! earlier one; a link to `/dev/null` masks it), then
//! `/etc/arbor/agent.toml`; later keys override earlier ones, maintenance
//! windows add up. One difference from Zincati: a window's length is
//! elapsed time from its start (on a DST change Zincati follows the wall
//! clock instead: a window in the skipped hour is shorter, one in the
//! repeated hour longer). Day names are case-insensitive.
//!
//! ```toml
//! [identity]
//! group = "workers"
//!
//! [updates]
//! strategy = "periodic"        # immediate | periodic | fleet_lock
//!
//! [updates.periodic]
//! time_zone = "Europe/Berlin"  # a tz database name, "UTC" (default) or "localtime"
//!
//! [[updates.periodic.window]]
//! days = ["Sat", "Sun"]
//! start_time = "22:30"
//! length_minutes = 60
//!
//! [updates.fleet_lock]
//! base_url = "http://fleetlock.example.com:8080/"
//!
//! [agent]
//! check_interval_minutes = 5    # between update checks (with jitter)
//! ```
//!
//! Every error names the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

use crate::fleetlock::{valid_name, DEFAULT_GROUP};
use crate::window::Window;

/// Where the fragments are read from, in order (relative to a root).
pub const FRAGMENTS: &[&str] = &[
    "usr/lib/arbor/agent.d",
    "etc/arbor/agent.d",
    "run/arbor/agent.d",
    "etc/arbor/agent.toml",
];

/// When to reboot into a staged update.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// As soon as it is staged.
    Immediate,
    /// Inside one of the maintenance windows.
    Periodic {
        /// The windows' time zone.
        tz: TimeZone,
        /// Its name as configured.
        tz_name: String,
        /// The windows (at least one).
        windows: Vec<Window>,
    },
    /// When the FleetLock server at `base_url` grants a slot.
    FleetLock {
        /// The server's base URL.
        base_url: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The reboot group (FleetLock).
    pub group: String,
    /// The reboot strategy.
    pub strategy: Strategy,
    /// Minutes between update checks (before jitter).
    pub check_interval_minutes: u64,
    /// The files it was read from, in order.
    pub sources: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            group: DEFAULT_GROUP.to_string(),
            strategy: Strategy::Immediate,
            check_interval_minutes: 5,
            sources: Vec::new(),
        }
    }
}

/// The fragment files under `root` (`/` on a machine), in reading order,
/// as Zincati and systemd order drop-ins: the `*.toml` files of the
/// directories of [`FRAGMENTS`] by name, a name in a later directory
/// replacing the same name in an earlier one (a link to `/dev/null`, or
/// an empty file, masks it), sorted by name; `/etc/arbor/agent.toml` last.
/// Hidden files are ignored.
pub fn fragment_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut by_name = std::collections::BTreeMap::new();
    let mut last = None;
    for f in FRAGMENTS {
        let p = root.join(f);
        if f.ends_with(".toml") {
            if p.is_file() {
                last = Some(p);
            }
            continue;
        }
        let entries = match std::fs::read_dir(&p) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("Reading {}", p.display())),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".toml") {
                continue;
            }
            by_name.insert(name, e.path());
        }
    }
    let masked = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
        }
        Ok(m) => m.is_file() && m.len() == 0,
        Err(_) => false,
    };
    let mut files: Vec<PathBuf> = by_name.into_values().filter(|p| !masked(p)).collect();
    files.extend(last);
    Ok(files)
}

/// Reads and checks the configuration under `root`.
pub fn load(root: &Path) -> Result<Config> {
    let localtime = local_zone(root)?;
    let files = fragment_files(root)?;
    let mut texts = Vec::new();
    for f in &files {
        texts.push((
            f.clone(),
            std::fs::read_to_string(f).with_context(|| format!("Reading {}", f.display()))?,
        ));
    }
    parse_with(&texts, &localtime)
}

/// What the fragments set so far, with where each value came from.
#[derive(Debug, Default)]
struct Raw {
    group: Option<(String, PathBuf)>,
    strategy: Option<(String, PathBuf)>,
    tz: Option<(String, PathBuf)>,
    windows: Vec<(Window, PathBuf)>,
    base_url: Option<(String, PathBuf)>,
    interval: Option<(u64, PathBuf)>,
}

/// Parses fragments (file, text), in order; `localtime` is UTC.
pub fn parse(fragments: &[(PathBuf, String)]) -> Result<Config> {
    parse_with(fragments, &TimeZone::UTC)
}

/// The machine's zone from `root/etc/localtime`: UTC when there is none
/// (as Zincati), the zone a symbolic link names, or the file's own TZif
/// data. The environment (`TZ`) is not read.
pub fn local_zone(root: &Path) -> Result<TimeZone> {
    let p = root.join("etc/localtime");
    match std::fs::read_link(&p) {
        Ok(target) => {
            let t = target.to_string_lossy();
            if let Some((_, name)) = t.split_once("zoneinfo/") {
                if let Ok(tz) = TimeZone::get(name) {
                    return Ok(tz);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TimeZone::UTC),
        Err(_) => {}
    }
    match std::fs::read(&p) {
        Ok(data) => TimeZone::tzif("localtime", &data)
            .with_context(|| format!("{} is not a time zone file", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TimeZone::UTC),
        Err(e) => Err(e).with_context(|| format!("Reading {}", p.display())),
    }
}

/// [`parse`] with the machine's zone for `time_zone = "localtime"`.
pub fn parse_with(fragments: &[(PathBuf, String)], localtime: &TimeZone) -> Result<Config> {
    let mut raw = Raw::default();
    for (path, text) in fragments {
        fragment(path, text, &mut raw).with_context(|| format!("In {}", path.display()))?;
    }
    let group = raw.group.map_or(DEFAULT_GROUP.to_string(), |g| g.0);
    let strategy = match raw.strategy.as_ref().map(|(s, p)| (s.as_str(), p)) {
        None | Some(("immediate", _)) => Strategy::Immediate,
        Some(("periodic", p)) => {
            if raw.windows.is_empty() {
                bail!(
                    "In {}: updates.strategy = \"periodic\" needs at least one [[updates.periodic.window]]",
                    p.display()
                );
            }
            let tz_name = raw.tz.map_or("UTC".to_string(), |t| t.0);
            Strategy::Periodic {
                tz: time_zone(&tz_name, localtime)?,
                tz_name,
                windows: raw.windows.into_iter().map(|w| w.0).collect(),
            }
        }
        Some(("fleet_lock", p)) => match raw.base_url {
            Some((u, _)) => Strategy::FleetLock { base_url: u },
            None => bail!(
                "In {}: updates.strategy = \"fleet_lock\" needs updates.fleet_lock.base_url",
                p.display()
            ),
        },
        Some((other, p)) => bail!(
            "In {}: updates.strategy: unknown strategy {other:?} (immediate, periodic or fleet_lock)",
            p.display()
        ),
    };
    Ok(Config {
        group,
        strategy,
        check_interval_minutes: raw.interval.map_or(5, |i| i.0),
        sources: fragments.iter().map(|f| f.0.clone()).collect(),
    })
}

fn fragment(path: &Path, text: &str, raw: &mut Raw) -> Result<()> {
    let doc: toml::Table = text.parse().context("Not valid TOML")?;
    let p = || path.to_path_buf();
    for (k, v) in &doc {
        match k.as_str() {
            "identity" => {
                for (k, v) in table(v, "identity")? {
                    match k.as_str() {
                        "group" => {
                            let g = string(v, "identity.group")?;
                            if !valid_name(&g) {
                                bail!("identity.group: {g:?} is not a valid group name (letters, digits, '-', '_', '.')");
                            }
                            raw.group = Some((g, p()));
                        }
                        // Zincati's; accepted, not used.
                        "rollout_wariness" => {}
                        other => bail!("identity.{other}: unknown key"),
                    }
                }
            }
            "updates" => {
                for (k, v) in table(v, "updates")? {
                    match k.as_str() {
                        "strategy" => raw.strategy = Some((string(v, "updates.strategy")?, p())),
                        "enabled" => {
                            if !v.as_bool().context("updates.enabled: not true or false")? {
                                bail!("updates.enabled = false is not supported: remove the agent's unit instead");
                            }
                        }
                        "periodic" => {
                            for (k, v) in table(v, "updates.periodic")? {
                                match k.as_str() {
                                    "time_zone" => {
                                        let t = string(v, "updates.periodic.time_zone")?;
                                        time_zone(&t, &TimeZone::UTC)?;
                                        raw.tz = Some((t, p()));
                                    }
                                    "window" => {
                                        let arr = v.as_array().context(
                                            "updates.periodic.window: not an array of tables ([[updates.periodic.window]])",
                                        )?;
                                        for (i, w) in arr.iter().enumerate() {
                                            raw.windows.push((window(w, i)?, p()));
                                        }
                                    }
                                    other => bail!("updates.periodic.{other}: unknown key"),
                                }
                            }
                        }
                        "fleet_lock" => {
                            for (k, v) in table(v, "updates.fleet_lock")? {
                                match k.as_str() {
                                    "base_url" => {
                                        let u = string(v, "updates.fleet_lock.base_url")?;
                                        if !u.starts_with("http://") || u.len() <= "http://".len() {
                                            bail!("updates.fleet_lock.base_url: {u:?} is not an http:// URL (TLS is not supported yet)");
                                        }
                                        raw.base_url = Some((u, p()));
                                    }
                                    other => bail!("updates.fleet_lock.{other}: unknown key"),
                                }
                            }
                        }
                        other => bail!("updates.{other}: unknown key"),
                    }
                }
            }
            "agent" => {
                for (k, v) in table(v, "agent")? {
                    match k.as_str() {
                        "check_interval_minutes" => {
                            let n = v
                                .as_integer()
                                .filter(|n| (1..=10080).contains(n))
                                .context("agent.check_interval_minutes: not a number of minutes from 1 to 10080")?;
                            raw.interval = Some((n as u64, p()));
                        }
                        other => bail!("agent.{other}: unknown key"),
                    }
                }
            }
            other => bail!("{other}: unknown section (identity, updates, agent)"),
        }
    }
    Ok(())
}

fn table<'a>(v: &'a toml::Value, key: &str) -> Result<&'a toml::Table> {
    v.as_table().with_context(|| format!("{key}: not a table"))
}

fn string(v: &toml::Value, key: &str) -> Result<String> {
    Ok(v.as_str()
        .with_context(|| format!("{key}: not a string"))?
        .to_string())
}

/// `"UTC"`, `"localtime"` (`localtime`: the machine's, see
/// [`local_zone`]) or a tz database name.
pub fn time_zone(name: &str, localtime: &TimeZone) -> Result<TimeZone> {
    match name {
        "UTC" => Ok(TimeZone::UTC),
        "localtime" => Ok(localtime.clone()),
        n => TimeZone::get(n).with_context(|| {
            format!("updates.periodic.time_zone: {n:?} is not a time zone of the tz database")
        }),
    }
}

fn window(v: &toml::Value, i: usize) -> Result<Window> {
    let key = format!("updates.periodic.window[{i}]");
    let t = table(v, &key)?;
    let mut days = Vec::new();
    let mut start = None;
    let mut length = None;
    for (k, v) in t {
        match k.as_str() {
            "days" => {
                let arr = v
                    .as_array()
                    .with_context(|| format!("{key}.days: not an array"))?;
                for d in arr {
                    let s = d
                        .as_str()
                        .with_context(|| format!("{key}.days: not a string"))?;
                    let day = weekday(s).with_context(|| {
                        format!(
                            "{key}.days: {s:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"
                        )
                    })?;
                    if !days.contains(&day) {
                        days.push(day);
                    }
                }
            }
            "start_time" => {
                let s = v
                    .as_str()
                    .with_context(|| format!("{key}.start_time: not a string"))?;
                start = Some(hh_mm(s).with_context(|| {
                    format!("{key}.start_time: {s:?} is not HH:MM (00:00 to 23:59)")
                })?);
            }
            "length_minutes" => {
                let n = v
                    .as_integer()
                    .filter(|n| (1..=10080).contains(n))
                    .with_context(|| {
                        format!("{key}.length_minutes: not a number of minutes from 1 to 10080")
                    })?;
                length = Some(n as u64);
            }
            other => bail!("{key}.{other}: unknown key"),
        }
    }
    if days.is_empty() {
        bail!("{key}.days: missing or empty");
    }
    Ok(Window {
        days,
        start: start.with_context(|| format!("{key}.start_time: missing"))?,
        length_minutes: length.with_context(|| format!("{key}.length_minutes: missing"))?,
    })
}

fn weekday(s: &str) -> Option<Weekday> {
    let days = [
        ("mon", "monday", Weekday::Monday),
        ("tue", "tuesday", Weekday::Tuesday),
        ("wed", "wednesday", Weekday::Wednesday),
        ("thu", "thursday", Weekday::Thursday),
        ("fri", "friday", Weekday::Friday),
        ("sat", "saturday", Weekday::Saturday),
        ("sun", "sunday", Weekday::Sunday),
    ];
    days.iter()
        .find(|(a, b, _)| s.eq_ignore_ascii_case(a) || s.eq_ignore_ascii_case(b))
        .map(|d| d.2)
}

/// `H:MM` or `HH:MM` (as Zincati takes them), digits only.
fn hh_mm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    let ok = |f: &str| (1..=2).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit());
    if !ok(h) || !ok(m) {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Config> {
        parse(&[(PathBuf::from("/etc/arbor/agent.toml"), text.to_string())])
    }

    #[test]
    fn defaults_and_each_strategy() {
        let c = one("").unwrap();
        assert_eq!(
            (c.group.as_str(), &c.strategy),
            ("default", &Strategy::Immediate)
        );
        let c = one("[updates]\nstrategy = \"fleet_lock\"\n[updates.fleet_lock]\nbase_url = \"http://10.0.2.2:3333/\"\n[identity]\ngroup = \"workers\"\n").unwrap();
        assert_eq!(c.group, "workers");
        assert_eq!(
            c.strategy,
            Strategy::FleetLock {
                base_url: "http://10.0.2.2:3333/".into()
            }
        );
        // A short host name is a URL too; a scheme alone is not.
        let short = one("[updates]\nstrategy = \"fleet_lock\"\n[updates.fleet_lock]\nbase_url = \"http://lb\"\n");
        assert!(short.is_ok(), "{short:?}");
        assert!(one("[updates.fleet_lock]\nbase_url = \"http://\"\n").is_err());
        let c = one(
            "[updates]\nstrategy = \"periodic\"\n[updates.periodic]\ntime_zone = \"Europe/Berlin\"\n\
             [[updates.periodic.window]]\ndays = [\"Sat\", \"Sun\"]\nstart_time = \"22:30\"\nlength_minutes = 60\n",
        )
        .unwrap();
        let Strategy::Periodic {
            tz_name, windows, ..
        } = c.strategy
        else {
            panic!()
        };
        assert_eq!(tz_name, "Europe/Berlin");
        assert_eq!(windows[0].days, [Weekday::Saturday, Weekday::Sunday]);
        assert_eq!(windows[0].start, Time::new(22, 30, 0, 0).unwrap());
    }

    #[test]
    fn fragments_override_and_windows_add_up() {
        let w = |d: &str| {
            format!("[[updates.periodic.window]]\ndays = [\"{d}\"]\nstart_time = \"01:00\"\nlength_minutes = 30\n")
        };
        let c = parse(&[
            (
                PathBuf::from("/usr/lib/arbor/agent.d/10-os.toml"),
                format!("[updates]\nstrategy = \"immediate\"\n{}", w("Mon")),
            ),
            (
                PathBuf::from("/etc/arbor/agent.toml"),
                format!("[updates]\nstrategy = \"periodic\"\n{}", w("Tue")),
            ),
        ])
        .unwrap();
        let Strategy::Periodic {
            windows, tz_name, ..
        } = c.strategy
        else {
            panic!()
        };
        assert_eq!((windows.len(), tz_name.as_str()), (2, "UTC"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            ("[updates]\nstrategy = \"sometimes\"\n", "updates.strategy: unknown strategy \"sometimes\""),
            ("[updates]\nstrategy = \"periodic\"\n", "needs at least one [[updates.periodic.window]]"),
            ("[updates]\nstrategy = \"fleet_lock\"\n", "needs updates.fleet_lock.base_url"),
            ("[updates.fleet_lock]\nbase_url = \"ftp://x\"\n", "updates.fleet_lock.base_url: \"ftp://x\""),
            ("[updates.fleet_lock]\nbase_url = \"https://fl.example.com/\"\n", "TLS is not supported yet"),
            ("[updates.periodic]\ntime_zone = \"Mars/Olympus\"\n", "updates.periodic.time_zone: \"Mars/Olympus\""),
            ("[[updates.periodic.window]]\ndays = [\"Funday\"]\nstart_time = \"01:00\"\nlength_minutes = 5\n", "updates.periodic.window[0].days: \"Funday\""),
            ("[[updates.periodic.window]]\ndays = [\"Mon\"]\nstart_time = \"25:00\"\nlength_minutes = 5\n", "updates.periodic.window[0].start_time: \"25:00\""),
            ("[[updates.periodic.window]]\ndays = [\"Mon\"]\nstart_time = \"01:00\"\nlength_minutes = 0\n", "updates.periodic.window[0].length_minutes"),
            ("[[updates.periodic.window]]\ndays = [\"Mon\"]\nlength_minutes = 5\n", "updates.periodic.window[0].start_time: missing"),
            ("[[updates.periodic.window]]\ndays = [\"Mon\"]\nstart_time = \"01:00\"\nlength_minutes = 5\ncolour = 1\n", "updates.periodic.window[0].colour: unknown key"),
            ("[identity]\ngroup = \"a b\"\n", "identity.group: \"a b\""),
            ("[agent]\ncheck_interval_minutes = 0\n", "agent.check_interval_minutes"),
            ("[updates]\nstratgy = \"immediate\"\n", "updates.stratgy: unknown key"),
            ("[misc]\n", "misc: unknown section"),
            ("[updates\n", "Not valid TOML"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", one(text).unwrap_err());
            assert!(
                e.contains("/etc/arbor/agent.toml") && e.contains(want),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn fragment_files_are_read_in_order() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let files = [
            "usr/lib/arbor/agent.d/20-b.toml",
            "usr/lib/arbor/agent.d/10-a.toml",
            "usr/lib/arbor/agent.d/30-os.toml",
            "usr/lib/arbor/agent.d/40-masked.toml",
            "etc/arbor/agent.toml",
            "etc/arbor/agent.d/30-os.toml",
            "etc/arbor/agent.d/50-x.toml",
            "etc/arbor/agent.d/.hidden.toml",
            "etc/arbor/agent.d/notes.txt",
        ];
        for f in files {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), "# a fragment\n").unwrap();
        }
        std::os::unix::fs::symlink("/dev/null", r.join("etc/arbor/agent.d/40-masked.toml"))
            .unwrap();
        let got: Vec<String> = fragment_files(r)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(r).unwrap().display().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "usr/lib/arbor/agent.d/10-a.toml",
                "usr/lib/arbor/agent.d/20-b.toml",
                "etc/arbor/agent.d/30-os.toml",
                "etc/arbor/agent.d/50-x.toml",
                "etc/arbor/agent.toml",
            ]
        );
        assert_eq!(load(r).unwrap().sources.len(), 5);
    }

    /// A window of the OS replaced by the machine's fragment of the same
    /// name: only the machine's window counts.
    #[test]
    fn a_replaced_fragment_takes_its_windows_with_it() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let w = |d: &str| {
            format!("[updates]\nstrategy = \"periodic\"\n[[updates.periodic.window]]\ndays = [\"{d}\"]\nstart_time = \"1:05\"\nlength_minutes = 30\n")
        };
        for (f, d) in [
            ("usr/lib/arbor/agent.d/10-os.toml", "Mon"),
            ("etc/arbor/agent.d/10-os.toml", "sunday"),
        ] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), w(d)).unwrap();
        }
        let Strategy::Periodic { windows, .. } = load(r).unwrap().strategy else {
            panic!()
        };
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].days, [Weekday::Sunday]);
        assert_eq!(windows[0].start, Time::new(1, 5, 0, 0).unwrap());
    }

    #[test]
    fn localtime_is_the_roots_or_utc() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(local_zone(r).unwrap(), TimeZone::UTC);
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::os::unix::fs::symlink("../usr/share/zoneinfo/Asia/Tokyo", r.join("etc/localtime"))
            .unwrap();
        assert_eq!(local_zone(r).unwrap(), TimeZone::get("Asia/Tokyo").unwrap());
        std::fs::write(r.join("etc/agent.toml"), "").unwrap();
        std::fs::create_dir_all(r.join("etc/arbor")).unwrap();
        std::fs::write(
            r.join("etc/arbor/agent.toml"),
            "[updates]\nstrategy = \"periodic\"\n[updates.periodic]\ntime_zone = \"localtime\"\n[[updates.periodic.window]]\ndays = [\"SAT\"]\nstart_time = \"22:00\"\nlength_minutes = 60\n",
        )
        .unwrap();
        let Strategy::Periodic { tz, .. } = load(r).unwrap().strategy else {
            panic!()
        };
        assert_eq!(tz, TimeZone::get("Asia/Tokyo").unwrap());
        for bad in ["+1:+5", "1:", ":30", "123:00", "07:5x"] {
            assert!(hh_mm(bad).is_none(), "{bad}");
        }
        assert_eq!(hh_mm("7:5"), Some(Time::new(7, 5, 0, 0).unwrap()));
    }
}
