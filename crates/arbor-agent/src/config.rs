//! The agent's configuration, in Zincati's format: TOML fragments read
//! in order (`/usr/lib/arbor/agent.d/*.toml`, `/etc/arbor/agent.toml`,
//! `/etc/arbor/agent.d/*.toml`, each directory in file-name order), later
//! keys overriding earlier ones, maintenance windows adding up:
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
    "etc/arbor/agent.toml",
    "etc/arbor/agent.d",
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

/// The fragment files under `root` (`/` on a machine), in reading order.
pub fn fragment_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for f in FRAGMENTS {
        let p = root.join(f);
        if f.ends_with(".toml") {
            if p.is_file() {
                files.push(p);
            }
            continue;
        }
        let entries = match std::fs::read_dir(&p) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("Reading {}", p.display())),
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        names.sort();
        files.extend(names);
    }
    Ok(files)
}

/// Reads and checks the configuration under `root`.
pub fn load(root: &Path) -> Result<Config> {
    let files = fragment_files(root)?;
    let mut texts = Vec::new();
    for f in &files {
        texts.push((
            f.clone(),
            std::fs::read_to_string(f).with_context(|| format!("Reading {}", f.display()))?,
        ));
    }
    parse(&texts)
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

/// Parses fragments (file, text), in order.
pub fn parse(fragments: &[(PathBuf, String)]) -> Result<Config> {
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
                tz: time_zone(&tz_name)?,
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
                                        time_zone(&t)?;
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
                                        if !u.starts_with("http://") || u.len() < 10 {
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

/// `"UTC"`, `"localtime"` (the machine's `/etc/localtime`) or a tz
/// database name.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    match name {
        "UTC" => Ok(TimeZone::UTC),
        "localtime" => TimeZone::try_system().context(
            "updates.periodic.time_zone = \"localtime\": the machine's time zone is not readable",
        ),
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
    Some(match s {
        "Mon" | "Monday" => Weekday::Monday,
        "Tue" | "Tuesday" => Weekday::Tuesday,
        "Wed" | "Wednesday" => Weekday::Wednesday,
        "Thu" | "Thursday" => Weekday::Thursday,
        "Fri" | "Friday" => Weekday::Friday,
        "Sat" | "Saturday" => Weekday::Saturday,
        "Sun" | "Sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn hh_mm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
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
        for f in [
            "usr/lib/arbor/agent.d/20-b.toml",
            "usr/lib/arbor/agent.d/10-a.toml",
            "etc/arbor/agent.toml",
            "etc/arbor/agent.d/50-x.toml",
            "etc/arbor/agent.d/notes.txt",
        ] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), "").unwrap();
        }
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
                "etc/arbor/agent.toml",
                "etc/arbor/agent.d/50-x.toml"
            ]
        );
        assert_eq!(load(r).unwrap().sources.len(), 4);
    }
}
