//! MQTT over WebSocket, for browser clients: the WebSocket handshake (subprotocol `mqtt`),
//! then the same session as on the TCP listeners over a byte stream made of the connection's
//! binary messages.
//!
//! MQTT over WebSocket (MQTT 3.1.1 § 6, MQTT 5 § 6) carries packets in binary messages, a
//! packet may span messages and a message may hold several: so the session reads the messages'
//! bytes as one stream and needs nothing else. Any other kind of data message closes the
//! connection, as the standard asks. Messages and frames are bounded by the largest packet a
//! user may send, checked by tungstenite before it buffers them, so a client cannot make the
//! agent hold more than the TCP listeners would.

use super::session::Transport;
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The subprotocols of MQTT over WebSocket we answer to, in order of preference: `mqtt` (the
/// standard's), and `mqttv3.1` (what older clients ask for).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// How the WebSocket layer is bounded for a listener whose clients may send packets of up to
/// `max_packet` bytes (a packet larger than a message still arrives, split over several).
pub fn config(max_packet: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(max_packet))
        .max_frame_size(Some(max_packet))
}

/// The subprotocol to answer a handshake with: `Ok(None)` when the client offered none (some
/// clients do not; MQTT bytes still follow), an error response when it offered only others.
fn choose_subprotocol(offered: Option<&HeaderValue>) -> Result<Option<&'static str>, String> {
    let Some(offered) = offered else {
        return Ok(None);
    };
    let offered = offered
        .to_str()
        .map_err(|_| "its Sec-WebSocket-Protocol header is not text".to_string())?;
    let names: Vec<&str> = offered.split(',').map(str::trim).collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|p| names.contains(p))
        .map(Some)
        .ok_or_else(|| format!("it offered the subprotocols {offered:?}, none of them mqtt"))
}

/// The handshake's answer: `mqtt` as the subprotocol, or 400 Bad Request saying why. The
/// signature is tungstenite's callback's, large error type and all.
#[allow(clippy::result_large_err)]
fn answer(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    match choose_subprotocol(request.headers().get("sec-websocket-protocol")) {
        Ok(Some(p)) => {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(p));
            Ok(response)
        }
        Ok(None) => Ok(response),
        Err(why) => {
            let mut refusal = ErrorResponse::new(Some(why));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    }
}

/// Does the WebSocket handshake on `stream` (the caller bounds it in time).
pub async fn accept<S>(stream: S, max_packet: usize) -> Result<WsTransport<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = Some(config(max_packet));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, answer, config)
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    Ok(WsTransport {
        ws,
        pending: Bytes::new(),
    })
}

/// A WebSocket connection as the byte stream of its binary messages.
pub struct WsTransport<S> {
    /// The connection.
    ws: WebSocketStream<S>,
    /// What is left of the last binary message the session has not read yet.
    pending: Bytes,
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTransport<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                // The end of the connection: the session sees the stream close.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // Answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message: MQTT over WebSocket takes binary messages only",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTransport<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(to_io)?;
        let message = Message::Binary(Bytes::copy_from_slice(buf));
        Pin::new(&mut self.ws).start_send(message).map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}

impl<S: Transport> Transport for WsTransport<S> {
    fn quickack(&self) {
        self.ws.get_ref().quickack();
    }
}

/// For the `websocket` fuzz target: `bytes` as a client's handshake request (answered as
/// [`accept`] answers it), then as the frames that follow one, read with the bounds the front
/// door sets until they end or fail. tungstenite's synchronous core is what the async stream
/// runs, so this is the decoder every WebSocket client reaches.
#[doc(hidden)]
pub fn fuzz(bytes: &[u8]) {
    use tokio_tungstenite::tungstenite::protocol::Role;
    /// Reads `bytes`, swallows what is written.
    struct Wire<'a>(std::io::Cursor<&'a [u8]>);
    impl io::Read for Wire<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl io::Write for Wire<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let limit = super::Limits::default().max_packet;
    let wire = Wire(std::io::Cursor::new(bytes));
    let _ =
        tokio_tungstenite::tungstenite::accept_hdr_with_config(wire, answer, Some(config(limit)));
    let wire = Wire(std::io::Cursor::new(bytes));
    let mut ws = tokio_tungstenite::tungstenite::WebSocket::from_raw_socket(
        wire,
        Role::Server,
        Some(config(limit)),
    );
    while ws.read().is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mqtt_subprotocol_is_chosen_and_others_alone_are_refused() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(choose_subprotocol(Some(&h("mqtt"))), Ok(Some("mqtt")));
        assert_eq!(
            choose_subprotocol(Some(&h("mqttv3.1, mqtt"))),
            Ok(Some("mqtt"))
        );
        assert_eq!(
            choose_subprotocol(Some(&h("mqttv3.1"))),
            Ok(Some("mqttv3.1"))
        );
        assert_eq!(choose_subprotocol(None), Ok(None));
        assert_eq!(
            choose_subprotocol(Some(&h("chat, soap"))).unwrap_err(),
            "it offered the subprotocols \"chat, soap\", none of them mqtt"
        );
    }

    /// A client's binary messages reach the session as one byte stream, however they are cut;
    /// a text message ends it with an error.
    #[tokio::test]
    async fn binary_messages_read_as_one_stream_and_text_is_an_error() {
        use futures_util::SinkExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let ws =
            WebSocketStream::from_raw_socket(server_io, Role::Server, Some(config(1024))).await;
        let mut server = WsTransport {
            ws,
            pending: Bytes::new(),
        };
        for part in [&b"\x10\x02"[..], b"ab", b""] {
            client.send(Message::binary(part.to_vec())).await.unwrap();
        }
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x10\x02ab");
        server.write_all(b"\x20\x02\x00\x00").await.unwrap();
        server.flush().await.unwrap();
        let answer = futures_util::StreamExt::next(&mut client).await;
        assert_eq!(
            answer.unwrap().unwrap(),
            Message::binary(b"\x20\x02\x00\x00".to_vec())
        );
        client.send(Message::text("CONNECT")).await.unwrap();
        let err = server.read(&mut got).await.unwrap_err();
        assert!(err.to_string().contains("binary messages only"), "{err}");
        // A message over the bound is refused before it is buffered.
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let ws =
            WebSocketStream::from_raw_socket(server_io, Role::Server, Some(config(1024))).await;
        let mut server = WsTransport {
            ws,
            pending: Bytes::new(),
        };
        client.send(Message::binary(vec![0u8; 2000])).await.unwrap();
        assert!(server.read(&mut got).await.is_err());
    }

    #[test]
    fn the_fuzz_entry_takes_a_handshake_and_frames() {
        fuzz(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n");
        fuzz(&[0x82, 0x82, 1, 2, 3, 4, 0x11, 0x02]);
        fuzz(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        fuzz(b"");
    }
}
