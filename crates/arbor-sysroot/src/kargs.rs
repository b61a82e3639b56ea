//! Kernel command lines: split, edited and joined like ostree's
//! `OstreeKernelArgs` (order kept; `KEY=VALUE` or bare `KEY`).

use anyhow::{bail, Result};

/// A kernel command line as an ordered list of arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kargs(Vec<String>);

fn key_of(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

impl Kargs {
    /// Splits at whitespace outside double quotes.
    pub fn parse(s: &str) -> Kargs {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in s.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                c if c.is_whitespace() && !quoted => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        Kargs(out)
    }

    /// Checks that `arg` is one argument (no unquoted whitespace, not empty).
    pub fn validate_arg(arg: &str) -> Result<()> {
        if Kargs::parse(arg).0.len() != 1 || arg.contains(['\n', '\0']) {
            bail!("Invalid kernel argument {arg:?}: expected one KEY or KEY=VALUE");
        }
        Ok(())
    }

    /// The arguments, in order.
    pub fn args(&self) -> &[String] {
        &self.0
    }

    /// The value of the first `key=...` (or `Some("")` for a bare `key`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|a| key_of(a) == key)
            .map(|a| a.split_once('=').map_or("", |(_, v)| v))
    }

    /// Appends an argument (duplicates allowed, as `--karg-append`).
    pub fn append(&mut self, arg: &str) {
        self.0.push(arg.to_string());
    }

    /// Replaces every argument with the key of `arg` by `arg`, keeping the
    /// position of the first; appends when there is none.
    pub fn replace(&mut self, arg: &str) {
        let key = key_of(arg);
        match self.0.iter().position(|a| key_of(a) == key) {
            Some(i) => {
                self.0[i] = arg.to_string();
                let mut n = 0;
                self.0.retain(|a| {
                    n += 1;
                    n - 1 == i || key_of(a) != key
                });
            }
            None => self.0.push(arg.to_string()),
        }
    }

    /// Removes every argument with `key`.
    pub fn remove_key(&mut self, key: &str) {
        self.0.retain(|a| key_of(a) != key);
    }

    /// Deletes `arg`: an exact `KEY=VALUE`, or a `KEY` that appears once.
    pub fn delete(&mut self, arg: &str) -> Result<()> {
        if let Some(i) = self.0.iter().position(|a| a == arg) {
            self.0.remove(i);
            return Ok(());
        }
        if arg.contains('=') {
            bail!("Kernel argument {arg:?} is not present");
        }
        let n = self.0.iter().filter(|a| key_of(a) == arg).count();
        match n {
            0 => bail!("Kernel argument {arg:?} is not present"),
            1 => {
                self.remove_key(arg);
                Ok(())
            }
            _ => bail!("Kernel argument {arg:?} has several values: name one as KEY=VALUE"),
        }
    }
}

impl std::fmt::Display for Kargs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit() {
        let mut k = Kargs::parse("root=LABEL=rootfs  quiet ostree=/ostree/boot.1/a/b/0 x=\"a b\"");
        assert_eq!(k.args().len(), 4);
        assert_eq!(k.get("x"), Some("\"a b\""));
        assert_eq!(k.get("root"), Some("LABEL=rootfs"));
        assert_eq!(k.get("quiet"), Some(""));
        k.replace("ostree=/ostree/boot.0/a/b/1");
        assert_eq!(
            k.to_string(),
            "root=LABEL=rootfs quiet ostree=/ostree/boot.0/a/b/1 x=\"a b\""
        );
        k.append("console=ttyS0");
        k.append("console=tty0");
        assert!(k.delete("console").is_err());
        k.delete("console=tty0").unwrap();
        k.delete("quiet").unwrap();
        assert!(k.delete("nope").is_err());
        k.remove_key("ostree");
        assert_eq!(k.to_string(), "root=LABEL=rootfs x=\"a b\" console=ttyS0");
        k.replace("console=hvc0");
        assert_eq!(k.to_string(), "root=LABEL=rootfs x=\"a b\" console=hvc0");
        assert!(Kargs::validate_arg("x=\"a b\"").is_ok());
        for bad in ["", " ", "a b", "a=1 b=2", "a\nb"] {
            assert!(Kargs::validate_arg(bad).is_err(), "{bad:?}");
        }
    }
}
