//! The man pages, generated from the clap definitions.

use std::io::{self, Write};

use super::args::EXIT_CODES;

/// The top man page: clap_mangen's sections, with the exit codes as an
/// EXIT STATUS section whose lines keep their breaks (as EXTRA, roff would
/// fill them into one paragraph).
pub fn render_man(cmd: clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = roff::Roff::default();
    roff.control("SH", ["EXIT STATUS"]).control("nf", []);
    for line in EXIT_CODES.lines() {
        roff.text([roff::roman(line)]);
    }
    roff.control("fi", []);
    roff.to_writer(w)?;
    man.render_version_section(w)
}
