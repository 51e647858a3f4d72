//! The console: a full-screen terminal UI that mirrors Azure Backup's portal flow,
//! keyboard first (`vmvault` with no subcommand).
//!
//! # Design
//! Elm style. [`app::App`] is the whole state; [`app::App::update`] is the only place it
//! changes, one [`app::Msg`] at a time; [`view::view`] draws it and only reads it. `update`
//! never does I/O: engine commands, loads and vault switches are returned as
//! [`app::Effect`]s that [`session::Session`] performs on blocking threads, answering with
//! more messages.
//!
//! Data reaches the views two ways:
//! - a background loader ([`data`]) rebuilds a plain [`data::Data`] snapshot (items, point
//!   counts, a window of jobs, policies, the dashboard's summary) when engine events say
//!   something changed, debounced by 100 ms, and sends it through a bounded channel;
//! - live job progress, job transitions and notices come straight from engine events.
//!
//! The two can disagree for a moment (a snapshot taken before a job ended arrives after
//! its end): [`app::App::job_now`] merges them so that an end is never undone and a bar
//! never goes back.
//!
//! The UI loop waits on the terminal's input, the data channel, engine events and a timer:
//! the timer ticks a few times a second only while jobs run (spinner, progress bars), and
//! otherwise once a minute for the clock. The screen is redrawn only when a message changed
//! something, so an idle console uses no CPU.
//!
//! # Layout of this module
//! One file per tab ([`tabs`]) and per popup ([`popups`]); shared widgets (the table that
//! renders only visible rows, progress cells, bar charts, the wizard frame) in
//! [`widgets`]; key bindings in [`keys`]; colours in [`theme`].

pub mod app;
pub mod data;
pub mod keys;
pub mod popups;
pub mod session;
pub mod tabs;
pub mod theme;
pub mod view;
pub mod widgets;

use crate::app::{AppError, Setup};
use app::Msg;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::IsTerminal;

/// Puts the terminal in full-screen mode and restores it when dropped (also on panic).
struct TerminalGuard {
    mouse: bool,
}

impl TerminalGuard {
    fn enter(mouse: bool) -> std::io::Result<TerminalGuard> {
        enable_raw_mode()?;
        let guard = TerminalGuard { mouse };
        let mut out = std::io::stdout();
        execute!(out, EnterAlternateScreen)?;
        if mouse {
            execute!(out, EnableMouseCapture)?;
        }
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal(mouse);
            hook(info);
        }));
        Ok(guard)
    }
}

fn restore_terminal(mouse: bool) {
    let mut out = std::io::stdout();
    if mouse {
        let _ = execute!(out, DisableMouseCapture);
    }
    let _ = execute!(out, LeaveAlternateScreen, crossterm::cursor::Show);
    let _ = disable_raw_mode();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal(self.mouse);
    }
}

/// Opens the console on the selected vault.
pub async fn run(setup: Setup) -> Result<u8, AppError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(AppError::usage(
            "the console needs a terminal; in scripts use the subcommands (`vmvault --help`), e.g. `vmvault items --json`",
        ));
    }
    let mut session = session::Session::start(setup).await;
    let guard = TerminalGuard::enter(session.app.mouse)
        .map_err(|e| AppError::failed(format!("cannot set up the terminal: {e}")))?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| AppError::failed(format!("cannot set up the terminal: {e}")))?;
    let _ = terminal.hide_cursor();
    if let Ok(size) = terminal.size() {
        session.handle(Msg::Resize(size.width, size.height));
    }
    // Terminal input, forwarded as messages.
    let tx = session.sender();
    let input = tokio::spawn(async move {
        let mut events = EventStream::new();
        while let Some(ev) = events.next().await {
            let msg = match ev {
                Ok(TermEvent::Key(k)) => Msg::Key(k),
                Ok(TermEvent::Mouse(m)) => Msg::Mouse(m),
                Ok(TermEvent::Resize(w, h)) => Msg::Resize(w, h),
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!("reading the terminal: {e}");
                    break;
                }
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let result = loop {
        if session.app.dirty {
            if let Err(e) = terminal.draw(|f| view::view(&session.app, f)) {
                break Err(AppError::failed(format!(
                    "cannot draw on the terminal: {e}"
                )));
            }
            session.app.dirty = false;
        }
        if session.app.should_quit {
            break Ok(0);
        }
        let msg = tokio::select! {
            m = session.next() => m,
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {
                tracing::info!("SIGTERM: closing the console");
                break Ok(0);
            }
            _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {
                tracing::info!("SIGHUP: closing the console");
                break Ok(0);
            }
        };
        session.handle(msg);
        // Handle what else is ready before drawing once.
        for _ in 0..256 {
            match session.try_next() {
                Some(m) => session.handle(m),
                None => break,
            }
            if session.app.should_quit {
                break;
            }
        }
    };
    input.abort();
    // Say what is happening while running jobs are cancelled.
    if session.app.own_running_jobs() > 0 {
        session.app.set_notice(
            crate::engine::NoticeLevel::Warning,
            "Cancelling running jobs and closing the vault…",
        );
        let _ = terminal.draw(|f| view::view(&session.app, f));
    }
    session.close().await;
    drop(terminal);
    drop(guard);
    result
}
