//! `arbor config`: render (and, later, apply) declared configuration.

use std::io::Write;

use anyhow::Result;
use arbor_config::input::read_input_file;
use arbor_config::render;

use crate::cli_config::{ConfigCmd, ConfigRenderOpts};

/// Runs a `config` subcommand.
pub fn config(cmd: ConfigCmd, out: &mut dyn Write) -> Result<()> {
    match cmd {
        ConfigCmd::Render(o) => config_render(o, out),
    }
}

/// `config render FILE...`: the canonical document and its name.
fn config_render(o: ConfigRenderOpts, out: &mut dyn Write) -> Result<()> {
    let inputs = o
        .files
        .iter()
        .map(|p| read_input_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let r = render(&inputs)?;
    if o.json {
        // The canonical bytes are JSON themselves: embed them unchanged.
        write!(
            out,
            "{{\"name\":{},\"config\":",
            serde_json::to_string(&r.name)?
        )?;
        out.write_all(&r.canonical)?;
        writeln!(out, "}}")?;
    } else {
        out.write_all(&r.canonical)?;
        writeln!(out)?;
        writeln!(out, "{}", r.name)?;
    }
    Ok(())
}
