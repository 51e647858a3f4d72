//! Driving the real `vmvault` binary in a pseudo-terminal (portable-pty) and reading its
//! screen (vt100), for the console's end-to-end tests. Everything waits by polling the
//! screen for text with a timeout, never by sleeping for a guessed time.
#![allow(dead_code)]

pub mod fixture;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `vmvault` console running in a pseudo-terminal.
pub struct Console {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    _master: Box<dyn MasterPty + Send>,
    parser: Arc<Mutex<vt100::Parser>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Generous: CI machines are small and shared.
pub const TIMEOUT: Duration = Duration::from_secs(120);

impl Console {
    /// Starts `vmvault` with `args` in a `cols`×`rows` terminal, with `env` set.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], cols: u16, rows: u16) -> Console {
        let pty = native_pty_system();
        let pair = pty
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let mut cmd = CommandBuilder::new(assert_cmd::cargo::cargo_bin("vmvault"));
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        for k in [
            "VMVAULT_CONFIG",
            "VMVAULT_VAULT",
            "VMVAULT_DATA_DIR",
            "NO_COLOR",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Ok(cwd) = std::env::current_dir() {
            cmd.cwd(cwd);
        }
        let child = pair
            .slave
            .spawn_command(cmd)
            .expect("start vmvault in the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = pair.master.take_writer().expect("pty writer");
        let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let p = parser.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => p.lock().unwrap().process(&buf[..n]),
                }
            }
        });
        Console {
            child,
            writer,
            _master: pair.master,
            parser,
            reader: Some(reader),
        }
    }

    /// The screen's text.
    pub fn screen(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// The screen parser (for colours).
    pub fn with_screen<T>(&self, f: impl FnOnce(&vt100::Screen) -> T) -> T {
        f(self.parser.lock().unwrap().screen())
    }

    /// Waits until the screen shows `text`; panics with the screen after `timeout`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        self.wait_until(&format!("{text:?} on the screen"), timeout, |s| {
            s.contains(text)
        })
    }

    /// Waits until `pred(screen)` holds; panics (showing the screen) after `timeout`.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vmvault exited ({status:?}) while waiting for {what}; screen:\n{s}");
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types text (characters as keys).
    pub fn send(&mut self, s: &str) {
        self.writer
            .write_all(s.as_bytes())
            .expect("write to the pty");
        self.writer.flush().expect("flush the pty");
    }

    pub fn enter(&mut self) {
        self.send("\r");
    }
    pub fn down(&mut self) {
        self.send("\x1b[B");
    }
    pub fn up(&mut self) {
        self.send("\x1b[A");
    }
    pub fn right(&mut self) {
        self.send("\x1b[C");
    }
    /// Esc. Sent at once with the next key it reads as Alt+key, which the console takes
    /// for Esc then the key (as a fast typist's burst would be).
    pub fn esc(&mut self) {
        self.send("\x1b");
    }

    /// Resizes the terminal (the console gets SIGWINCH).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self._master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("resize the pty");
        self.parser
            .lock()
            .unwrap()
            .screen_mut()
            .set_size(rows, cols);
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.exit_code();
            }
            if Instant::now() > deadline {
                let s = self.screen();
                let _ = self.child.kill();
                panic!("vmvault did not exit within {timeout:?}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        drop(self.reader.take());
    }
}
