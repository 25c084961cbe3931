//! `hivemind-lite`: the member with every role and the client CLI, built without the control
//! plane (no openraft, no fjall, no `--control-plane`, no `dev`; DESIGN.md §6j). It joins a
//! cluster through `--join` like any member outside the control plane.

fn main() -> std::process::ExitCode {
    hivemind::app::main()
}
