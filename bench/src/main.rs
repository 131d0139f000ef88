//! roster-bench: the load harness (client-only; it talks to servers over the wire like any
//! client). Filled by the roster-bench issue; until then it says so instead of pretending.

fn main() -> std::process::ExitCode {
    eprintln!("roster-bench: not implemented yet (see the roster-bench issue); nothing was run");
    std::process::ExitCode::from(2)
}
