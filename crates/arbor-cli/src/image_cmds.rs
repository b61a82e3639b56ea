//! `image build`: parses the options, calls [`arbor_image::build`], prints
//! the files and the wall time per format.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use arbor_image::{BuildOptions, BuildReport, Format, RootBy};

use crate::cli_image::{ImageBuildOpts, ImageCmd, RootArg};

/// `image` subcommands.
pub fn image(c: ImageCmd, out: &mut impl Write) -> Result<()> {
    match c {
        ImageCmd::Build(o) => build(o, out),
    }
}

fn build(o: ImageBuildOpts, out: &mut impl Write) -> Result<()> {
    let formats = Format::parse_list(&o.format)?;
    let to_stdout = o.output == Path::new("-");
    // A tar stream is built in a temporary directory first.
    let tmp = if to_stdout {
        Some(
            tempfile::Builder::new()
                .prefix("arbor-image-")
                .tempdir()
                .context("Creating a temporary directory")?,
        )
    } else {
        None
    };
    let opts = BuildOptions {
        repo: o.repo.unwrap_or_default(),
        rev: o.rev.unwrap_or_default(),
        formats: formats.clone(),
        kargs: o.karg,
        root_by: match o.root {
            RootArg::Uuid => RootBy::Uuid,
            RootArg::Label => RootBy::Label,
        },
        stateroot: o.stateroot,
        from_sysroot: o.from_sysroot,
        root_size: o.root_size.map(|m| m << 20),
        output: tmp.as_ref().map_or(o.output, |t| t.path().join("out")),
    };
    let r = arbor_image::build(&opts)?;
    if to_stdout {
        arbor_image::write_tar(&opts.output, &formats, r.timestamp, &mut *out)
            .map_err(crate::export_cmd::truncated_on_broken_pipe)?;
        render(&r, &mut std::io::stderr())?;
    } else {
        render(&r, out)?;
    }
    Ok(())
}

/// The files and the timings.
fn render(r: &BuildReport, w: &mut impl Write) -> Result<()> {
    writeln!(w, "Built {} ({})", r.commit, r.deployment)?;
    writeln!(
        w,
        "Wall times (the formats are built in parallel after the deploy):"
    )?;
    write!(w, "  deploy: {:.2} s", r.deploy.as_secs_f64())?;
    if r.linked_objects > 0 {
        write!(
            w,
            " ({} objects hard-linked from the source)",
            r.linked_objects
        )?;
    }
    writeln!(w)?;
    for (f, t) in &r.per_format {
        writeln!(
            w,
            "  {}: {:.2} s ({})",
            f.name(),
            t.as_secs_f64(),
            f.file_name()
        )?;
    }
    writeln!(w, "  total: {:.2} s", r.total.as_secs_f64())?;
    writeln!(w, "Stages (start + duration, in the order they ended):")?;
    for s in &r.stages {
        writeln!(
            w,
            "  {:>5.2} + {:.2} s  {}",
            s.start.as_secs_f64(),
            s.took.as_secs_f64(),
            s.name
        )?;
    }
    Ok(())
}
