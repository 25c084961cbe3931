//! The `hivemind` binary: every member, the control plane included, and the client CLI
//! ([`hivemind::app`]).

fn main() -> std::process::ExitCode {
    hivemind::app::main()
}
