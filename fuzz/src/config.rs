//! The agent's TOML config file: expanded into flags ([`settings_as_flags`]) and parsed by the
//! same clap parser as the command line.

use clap::Parser;
use hivemind::cli::Cli;
use hivemind::config::settings_as_flags;

/// A file is refused with a message or becomes flags that clap accepts or refuses; never a panic.
pub fn file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(flags) = settings_as_flags(text, "fuzz.toml", &[], |_| false) {
        let args = ["hivemind", "agent"].into_iter().map(String::from);
        let _ = Cli::try_parse_from(args.chain(flags));
    }
}
