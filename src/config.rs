//! Agent settings from a TOML file: `--config FILE` (or `HIVEMIND_CONFIG`) is expanded into
//! command-line flags before clap parses, so one parser validates every source. Precedence:
//! flags, then `HIVEMIND_*` env vars, then the file. Unknown keys are errors naming the key.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// Returns `args` with the config file's settings appended to the `agent` subcommand's flags.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(position) = args.iter().position(|a| a == "agent") else {
        return Ok(args);
    };
    let text_args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = match flag_value(&text_args[position..], "--config") {
        Some(path) => path,
        None => match std::env::var("HIVEMIND_CONFIG") {
            Ok(path) => path,
            Err(_) => return Ok(args),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("--config {path}: {e}"))?;
    let extra = settings_as_flags(&text, &path, &text_args[position..], |var| {
        std::env::var_os(var).is_some()
    })?;
    let mut out = args;
    let insert_at = position + 1;
    out.splice(insert_at..insert_at, extra.into_iter().map(OsString::from));
    Ok(out)
}

/// The flags the config file `text` (read from `path`) adds to the agent's command line `given`
/// (its arguments from `agent` on): one `--flag=value` per setting not already given as a flag
/// or in the environment (`env_set` says whether a variable is set). Pure, for the fuzz target.
pub fn settings_as_flags(
    text: &str,
    path: &str,
    given: &[String],
    env_set: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("--config {path}: {e}"))?;
    let cli = Cli::command();
    let agent = cli
        .find_subcommand("agent")
        .expect("agent subcommand exists");
    let mut extra = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let arg = agent
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
            .ok_or_else(|| format!("--config {path}: unknown setting `{key}`"))?;
        let given_as_flag = given
            .iter()
            .any(|a| a == &format!("--{flag}") || a.starts_with(&format!("--{flag}=")));
        let given_in_env = arg
            .get_env()
            .is_some_and(|var| env_set(&var.to_string_lossy()));
        if given_as_flag || given_in_env {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            single => vec![single],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => extra.push(format!("--{flag}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => extra.push(format!("--{flag}={s}")),
                toml::Value::Integer(i) => extra.push(format!("--{flag}={i}")),
                other => {
                    return Err(format!(
                        "--config {path}: `{key}` has an unsupported value {other}"
                    ))
                }
            }
        }
    }
    Ok(extra)
}

/// The `advertise` setting of the config file at `path` (re-read on SIGHUP: the address
/// watchdog moves the member to it). `None` when the file has no such setting.
pub fn advertise_in(path: &std::path::Path) -> Result<Option<std::net::IpAddr>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config {shown}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("--config {shown}: {e}"))?;
    match table.get("advertise") {
        None => Ok(None),
        Some(toml::Value::String(ip)) => ip
            .parse()
            .map(Some)
            .map_err(|_| format!("--config {shown}: advertise {ip:?} is not an IP address")),
        Some(other) => Err(format!(
            "--config {shown}: advertise must be a string, not {other}"
        )),
    }
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    /// Every example config in `deploy/` is accepted by the agent's parser as it stands.
    #[test]
    fn the_example_configs_in_deploy_parse() {
        use clap::Parser;
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let mut checked = 0;
        for entry in std::fs::read_dir(deploy).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let args = expand(os(&[
                "hivemind",
                "agent",
                "--config",
                path.to_str().unwrap(),
            ]))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{}: {e}", path.display());
            }
            checked += 1;
        }
        assert!(
            checked >= 4,
            "control-plane, host, dns and trigger examples"
        );
    }

    #[test]
    fn file_settings_become_flags_and_flags_win() {
        let file = write(
            "name = \"cp1\"\nhttp_port = 7710\ncontrol_plane = true\njoin = [\"a:1\", \"b:2\"]\n",
        );
        let path = file.path().to_str().unwrap();
        let out = expand(os(&[
            "hivemind",
            "agent",
            "--config",
            path,
            "--http-port",
            "9000",
        ]))
        .unwrap();
        let out: Vec<_> = out.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(out.contains(&"--name=cp1"));
        assert!(out.contains(&"--control-plane"));
        assert!(out.contains(&"--join=a:1") && out.contains(&"--join=b:2"));
        assert!(
            !out.contains(&"--http-port=7710"),
            "the flag given on the command line wins"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let file = write("nmae = \"x\"\n");
        let err = expand(os(&[
            "hivemind",
            "agent",
            "--config",
            file.path().to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(err.contains("`nmae`"), "{err}");
    }

    #[test]
    fn the_advertise_setting_is_read_for_reloads() {
        let file = write("name = \"a\"\nadvertise = \"127.0.0.2\"\n");
        assert_eq!(
            advertise_in(file.path()).unwrap(),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(advertise_in(write("name = \"a\"\n").path()).unwrap(), None);
        let err = advertise_in(write("advertise = \"nope\"\n").path()).unwrap_err();
        assert!(err.contains("advertise"), "{err}");
    }

    #[test]
    fn other_subcommands_are_untouched() {
        let args = os(&["hivemind", "status"]);
        assert_eq!(expand(args.clone()).unwrap(), args);
    }
}
