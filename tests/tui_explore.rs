mod common;
mod tui_support;
use common::*;
use tui_support::*;

#[test]
#[ignore]
fn explore() {
    let env = Env::new();
    let mut c = Console::spawn(&["--config", env.config.to_str().unwrap(), "--data-dir", env.data.to_str().unwrap()], &[], 120, 40);
    let s = c.wait_for("Dashboard", TIMEOUT);
    println!("{s}");
    c.send("2");
    c.send("d");
    let s = c.wait_for("Discovery complete", TIMEOUT);
    println!("{s}");
    c.send("r");
    let s = c.wait_for("Register items", TIMEOUT);
    println!("{s}");
    c.send(" ");
    c.enter();
    let s = c.wait_for("jobs created", TIMEOUT);
    println!("{s}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!("{}", c.screen());
    c.send("q");
    c.wait_exit(TIMEOUT);
}
