//! A serial device on a tty: one tokio task per device, reached through a [`SerialHandle`].
//!
//! The task owns the port. It opens it (via tokio-serial, which works on any tty, pseudo
//! terminals included), reports [`SerialEventKind::Available`], and then serves one command
//! at a time: a `line` device writes the channel's command and waits `timeout-ms` for the
//! reply (`serial_line.rs` reads it); a `raw` device writes bytes and reports every byte it
//! receives. When the device goes away (USB unplugged: end of file or an I/O error) the task
//! reports [`SerialEventKind::Unavailable`], answers waiting commands `unavailable`, and tries
//! to reopen the path with a capped backoff, reporting `Available` again when it succeeds.
//! Commands sent while the device is away are answered at once, never after a timeout.

use super::serial_line::{LineBuffer, LineProtocol};
pub use super::serial_message::{SerialError, SerialEvent, SerialEventKind};
use crate::config::{DataBits, Parity, Protocol, SerialConfig, StopBits};
use crate::model::ObjectId;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

/// First wait before reopening a device that went away.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reopen attempts: a replugged adapter is back within this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the handle asks the task.
enum Request {
    /// Switch a line channel.
    Send {
        /// The channel.
        channel: ObjectId,
        /// The state asked for.
        on: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<bool, SerialError>>,
    },
    /// Write raw bytes.
    Write {
        /// The bytes.
        bytes: Vec<u8>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), SerialError>>,
    },
}

impl Request {
    /// Answers the request with an error.
    fn fail(self, error: SerialError) {
        match self {
            Request::Send { reply, .. } => drop(reply.send(Err(error))),
            Request::Write { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The agent's handle on one device's task; cheap to clone.
#[derive(Clone, Debug)]
pub struct SerialHandle {
    /// The device's object id.
    device: ObjectId,
    /// The task's request queue.
    tx: mpsc::UnboundedSender<Request>,
}

impl SerialHandle {
    /// Starts the device's task on the current tokio runtime. Events go to `events`; the task
    /// ends when `cancel` fires, answering whatever still waits with [`SerialError::Stopped`].
    pub fn spawn(
        config: SerialConfig,
        events: mpsc::UnboundedSender<SerialEvent>,
        cancel: CancellationToken,
    ) -> SerialHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let device = config.id.clone();
        let task = Task {
            config,
            events,
            cancel,
            rx,
            queue: VecDeque::new(),
        };
        tokio::spawn(task.run());
        SerialHandle { device, tx }
    }

    /// The device's object id.
    pub fn device(&self) -> &ObjectId {
        &self.device
    }

    /// Switches a line channel. The answer is `Ok(state)` once the device confirmed (or, for
    /// a channel without a reply pattern, once the bytes are written).
    pub fn send(
        &self,
        channel: &ObjectId,
        on: bool,
    ) -> oneshot::Receiver<Result<bool, SerialError>> {
        let (reply, rx) = oneshot::channel();
        let request = Request::Send {
            channel: channel.clone(),
            on,
            reply,
        };
        self.submit(request);
        rx
    }

    /// Writes bytes to a raw device; the answer is `Ok` once they are written.
    pub fn write(&self, bytes: Vec<u8>) -> oneshot::Receiver<Result<(), SerialError>> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Write { bytes, reply });
        rx
    }

    /// Queues a request, answering it at once if the task is gone.
    fn submit(&self, request: Request) {
        if let Err(mpsc::error::SendError(request)) = self.tx.send(request) {
            let device = self.device.clone();
            request.fail(SerialError::Stopped { device });
        }
    }
}

/// A line command waiting for its reply.
struct Waiting {
    /// Where the answer goes.
    reply: oneshot::Sender<Result<bool, SerialError>>,
    /// The command as text, for the timeout message.
    command: String,
    /// When it times out.
    deadline: Instant,
}

/// Why a connected session ended.
enum End {
    /// Cancelled, or every handle dropped: the task ends.
    Stop,
    /// The device went away; the text says how.
    Gone(String),
}

/// One device's task.
struct Task {
    /// The device.
    config: SerialConfig,
    /// Where events go.
    events: mpsc::UnboundedSender<SerialEvent>,
    /// Ends the task.
    cancel: CancellationToken,
    /// Requests from handles.
    rx: mpsc::UnboundedReceiver<Request>,
    /// Requests not yet started, in arrival order.
    queue: VecDeque<Request>,
}

impl Task {
    /// Opens, serves, and reopens the device until cancelled.
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut reported: Option<String> = None;
        loop {
            match open(&self.config) {
                Ok(port) => {
                    backoff = MIN_BACKOFF;
                    self.emit(SerialEventKind::Available);
                    match self.serve(port).await {
                        End::Stop => break,
                        End::Gone(reason) => {
                            tracing::warn!(device = %self.config.id, %reason, "serial device went away; reopening");
                            self.emit(SerialEventKind::Unavailable(reason.clone()));
                            reported = Some(reason);
                        }
                    }
                }
                Err(reason) => {
                    if reported.is_none() {
                        tracing::warn!(device = %self.config.id, %reason, "serial device unavailable; retrying");
                        self.emit(SerialEventKind::Unavailable(reason.clone()));
                    }
                    reported = Some(reason);
                }
            }
            let reason = reported.clone().unwrap_or_default();
            if !self.wait_unavailable(backoff, &reason).await {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.fail_all(|device| SerialError::Stopped { device });
    }

    /// Sends an event; a closed channel means the agent is stopping, which `cancel` handles.
    fn emit(&self, kind: SerialEventKind) {
        let device = self.config.id.clone();
        let _ = self.events.send(SerialEvent { device, kind });
    }

    /// Waits `backoff`, answering every request `unavailable` at once. False when the task
    /// must end.
    async fn wait_unavailable(&mut self, backoff: Duration, reason: &str) -> bool {
        self.fail_all(|device| unavailable(device, reason));
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = &mut sleep => return true,
                request = self.rx.recv() => match request {
                    Some(r) => r.fail(unavailable(self.config.id.clone(), reason)),
                    None => return false,
                },
            }
        }
    }

    /// Answers every queued request with `error`.
    fn fail_all(&mut self, error: impl Fn(ObjectId) -> SerialError) {
        for request in self.queue.drain(..) {
            request.fail(error(self.config.id.clone()));
        }
    }

    /// Serves an open port until it goes away or the task is cancelled.
    async fn serve(&mut self, port: SerialStream) -> End {
        let (mut reader, mut writer) = tokio::io::split(port);
        let mut protocol = LineProtocol::new(&self.config);
        let mut lines = LineBuffer::default();
        let mut buf = [0u8; 512];
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let mut waiting: Option<Waiting> = None;
        loop {
            while waiting.is_none() {
                let Some(request) = self.queue.pop_front() else {
                    break;
                };
                match self
                    .start(request, &mut protocol, &mut writer, timeout)
                    .await
                {
                    Ok(w) => waiting = w,
                    Err(reason) => {
                        self.fail_all(|device| unavailable(device, &reason));
                        return End::Gone(reason);
                    }
                }
            }
            let deadline = waiting.as_ref().map(|w| w.deadline);
            tokio::select! {
                () = self.cancel.cancelled() => {
                    if let Some(w) = waiting.take() {
                        let _ = w.reply.send(Err(SerialError::Stopped { device: self.config.id.clone() }));
                    }
                    return End::Stop;
                }
                request = self.rx.recv() => match request {
                    Some(r) => self.queue.push_back(r),
                    None => return End::Stop,
                },
                read = reader.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => Some("the device closed the connection (end of file)".to_string()),
                        Ok(n) => { self.received(&buf[..n], &mut lines, &mut protocol, &mut waiting); None }
                        Err(e) => Some(format!("read error on {}: {e}", self.config.path.display())),
                    };
                    if let Some(reason) = n {
                        if let Some(w) = waiting.take() {
                            let _ = w.reply.send(Err(unavailable(self.config.id.clone(), &reason)));
                        }
                        self.fail_all(|device| unavailable(device, &reason));
                        return End::Gone(reason);
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    protocol.timed_out();
                    if let Some(w) = waiting.take() {
                        let (device, command, ms) = (self.config.id.clone(), w.command, self.config.timeout_ms);
                        let _ = w.reply.send(Err(SerialError::Timeout { device, command, ms }));
                    }
                }
            }
        }
    }

    /// Starts one request: writes its bytes and returns what now waits for a reply. An error
    /// is a port that stopped working.
    async fn start(
        &mut self,
        request: Request,
        protocol: &mut LineProtocol,
        writer: &mut tokio::io::WriteHalf<SerialStream>,
        timeout: Duration,
    ) -> Result<Option<Waiting>, String> {
        let device = self.config.id.clone();
        let raw = self.config.protocol == Protocol::Raw;
        match request {
            Request::Send { reply, .. } if raw => {
                let hint = "write bytes to it instead of switching a channel";
                let _ = reply.send(Err(SerialError::WrongProtocol {
                    device,
                    protocol: "raw",
                    hint,
                }));
                Ok(None)
            }
            Request::Write { reply, .. } if !raw => {
                let hint = "switch one of its channels instead of writing bytes";
                let _ = reply.send(Err(SerialError::WrongProtocol {
                    device,
                    protocol: "line",
                    hint,
                }));
                Ok(None)
            }
            Request::Write { bytes, reply } => {
                let command = String::from_utf8_lossy(&bytes).into_owned();
                match write(writer, &bytes, timeout, &self.config).await? {
                    true => drop(reply.send(Ok(()))),
                    false => drop(reply.send(Err(SerialError::Timeout {
                        device,
                        command,
                        ms: self.config.timeout_ms,
                    }))),
                }
                Ok(None)
            }
            Request::Send { channel, on, reply } => {
                let Some(command) = protocol.command(&channel, on) else {
                    let _ = reply.send(Err(SerialError::UnknownChannel { device, channel }));
                    return Ok(None);
                };
                let text = String::from_utf8_lossy(&command.bytes).into_owned();
                if !write(writer, &command.bytes, timeout, &self.config).await? {
                    protocol.timed_out();
                    let ms = self.config.timeout_ms;
                    let _ = reply.send(Err(SerialError::Timeout {
                        device,
                        command: text,
                        ms,
                    }));
                    return Ok(None);
                }
                if command.awaits_reply {
                    let deadline = Instant::now() + timeout;
                    return Ok(Some(Waiting {
                        reply,
                        command: text,
                        deadline,
                    }));
                }
                let _ = reply.send(Ok(on));
                self.emit(SerialEventKind::State { channel, on });
                Ok(None)
            }
        }
    }

    /// Handles received bytes: raw ones are passed on; lines answer the waiting command and
    /// report channel states.
    fn received(
        &mut self,
        bytes: &[u8],
        lines: &mut LineBuffer,
        protocol: &mut LineProtocol,
        waiting: &mut Option<Waiting>,
    ) {
        if self.config.protocol == Protocol::Raw {
            self.emit(SerialEventKind::Received(bytes.to_vec()));
            return;
        }
        for line in lines.push(bytes) {
            let result = protocol.line(&line);
            if let Some(answer) = result.answer {
                if let Some(w) = waiting.take() {
                    let device = self.config.id.clone();
                    let _ = w
                        .reply
                        .send(answer.map_err(|reason| SerialError::Failed { device, reason }));
                }
            }
            match result.state {
                Some((channel, on)) => self.emit(SerialEventKind::State { channel, on }),
                None => {
                    tracing::debug!(device = %self.config.id, %line, "serial line matches no reply")
                }
            }
        }
    }
}

/// Writes `bytes` within `timeout`: `Ok(false)` if the device did not take them in time,
/// `Err` if the port failed.
async fn write(
    writer: &mut tokio::io::WriteHalf<SerialStream>,
    bytes: &[u8],
    timeout: Duration,
    config: &SerialConfig,
) -> Result<bool, String> {
    match tokio::time::timeout(timeout, writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(format!("write error on {}: {e}", config.path.display())),
        Err(_) => Ok(false),
    }
}

/// Sleeps until `deadline`; never completes without one (the branch is disabled then).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// An `unavailable` error for `device`.
fn unavailable(device: ObjectId, reason: &str) -> SerialError {
    SerialError::Unavailable {
        device,
        reason: reason.to_string(),
    }
}

/// Opens the port with the configured line settings; the error says what to do.
fn open(config: &SerialConfig) -> Result<SerialStream, String> {
    let builder = tokio_serial::new(config.path.to_string_lossy(), config.baud)
        .data_bits(match config.data_bits {
            DataBits::Five => tokio_serial::DataBits::Five,
            DataBits::Six => tokio_serial::DataBits::Six,
            DataBits::Seven => tokio_serial::DataBits::Seven,
            DataBits::Eight => tokio_serial::DataBits::Eight,
        })
        .parity(match config.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match config.stop_bits {
            StopBits::One => tokio_serial::StopBits::One,
            StopBits::Two => tokio_serial::StopBits::Two,
        })
        .flow_control(tokio_serial::FlowControl::None);
    builder.open_native_async().map_err(|e| {
        let path = config.path.display();
        match e.kind {
            tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => format!(
                "cannot open {path}: permission denied; add the agent's user to the group that owns it \
                 (usually dialout: sudo usermod -aG dialout <user>) and log in again"
            ),
            tokio_serial::ErrorKind::NoDevice | tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => {
                format!("cannot open {path}: no such device; is it plugged in? (`pimesh doctor` lists the serial ports)")
            }
            _ => format!("cannot open {path}: {e}"),
        }
    })
}
