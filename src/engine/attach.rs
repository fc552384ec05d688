//! Connects the user's terminal (or pipes) to a command running in the sandbox: stdin in, stdout
//! and stderr out, raw mode and window resizes for a TTY, and the command's exit code back.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::engine::{Engine, EngineError, ExecSpec};
use crate::terminal;

pub struct ExecResult {
    pub code: i64,
    /// The command's stdout, when captured instead of passed through.
    pub captured: Vec<u8>,
    /// When the first byte of output arrived (what a user feels as start-up time).
    pub first_output: Option<Instant>,
}

/// What becomes of the command's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Printed, as the command wrote it.
    Pass,
    /// Kept instead of printed (`sbx doctor --leaks`).
    Capture,
    /// Printed, and its last [`TEE_LIMIT`] bytes kept too (`sbx login` reads the token the
    /// sign-in shows).
    Tee,
}

/// How much of the output [`Output::Tee`] keeps.
pub const TEE_LIMIT: usize = 1 << 20;

/// Runs `spec` in `container` attached to this process's stdio (stdout captured or kept too,
/// as `output` says) and waits for it to end.
pub async fn run(
    engine: &Engine,
    container: &str,
    spec: ExecSpec,
    output_mode: Output,
    mut record: Option<crate::cast::Recorder>,
) -> Result<ExecResult, EngineError> {
    let tty = spec.tty;
    let attach_stdin = spec.stdin;
    let streams = engine.start_exec(container, &spec).await?;
    let id = streams.id.clone();
    let mut output = streams.output;
    let mut input = streams.input;

    let _raw = if tty {
        terminal::RawMode::enter().ok()
    } else {
        None
    };
    if let Some((rows, cols)) = terminal::size().filter(|_| tty) {
        let _ = engine.resize_exec(&id, rows, cols).await;
    }
    let resize = tty.then(|| {
        let engine = engine.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal::size() {
                    let _ = engine.resize_exec(&id, rows, cols).await;
                }
            }
        })
    });

    // stdin is read on a plain thread: a blocking read there cannot hold up the runtime, and the
    // process exits without waiting for it.
    let pump = attach_stdin.then(|| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if input.write_all(&chunk).await.is_err() {
                    return;
                }
                let _ = input.flush().await;
            }
            // End of stdin: the command sees EOF.
            let _ = input.shutdown().await;
        })
    });

    let mut first_output = None;
    let mut captured = Vec::new();
    while let Some(item) = output.next().await {
        let Ok(item) = item else { break };
        first_output.get_or_insert_with(Instant::now);
        use bollard::container::LogOutput;
        let (bytes, to_stderr) = match item {
            LogOutput::StdErr { message } => (message, true),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (message, false),
            LogOutput::StdIn { .. } => continue,
        };
        if let Some(r) = record.as_mut() {
            r.output(&bytes);
        }
        // A closed stdout (`sbx run ... | head`) is not an error of the session.
        if output_mode == Output::Capture && !to_stderr {
            captured.extend_from_slice(&bytes);
        } else if to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(&bytes).and_then(|_| e.flush());
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&bytes).and_then(|_| o.flush());
            if output_mode == Output::Tee {
                captured.extend_from_slice(&bytes);
                if captured.len() > 2 * TEE_LIMIT {
                    let cut = captured.len() - TEE_LIMIT;
                    captured.drain(..cut);
                }
            }
        }
    }
    if let Some(r) = record {
        r.finish();
    }
    if let Some(p) = pump {
        p.abort();
    }
    if let Some(r) = resize {
        r.abort();
    }
    // The stream ends a moment before the engine records the exit code.
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        match engine.exec_exit_code(&id).await? {
            Some(c) => break c,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            None => break 255,
        }
    };
    Ok(ExecResult {
        code,
        captured,
        first_output,
    })
}
