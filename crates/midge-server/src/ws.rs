//! MQTT over WebSockets (MQTT 5.0 §6): the HTTP upgrade with the `mqtt`
//! subprotocol, and an adapter that makes the WebSocket a byte stream, so
//! the connection driver is the same as for TCP. MQTT packets travel in
//! binary frames and may span frames ([MQTT-6.0.0-2]); a text frame is a
//! protocol violation and closes the connection ([MQTT-6.0.0-1]).

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Performs the server side of the upgrade, answering with the MQTT
/// subprotocol the client offered (`mqtt`, or `mqttv3.1` from 3.1 clients).
// The error type is tungstenite's; its size is not ours to choose.
#[allow(clippy::result_large_err)]
/// A request whose request line and headers exceed `headers_limit` bytes
/// (`websockets_headers_size`) is refused with HTTP 431.
pub async fn accept<S>(
    stream: S,
    headers_limit: usize,
) -> Result<WsByteStream<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let size = req.method().as_str().len()
            + req.uri().to_string().len()
            + 12
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if size > headers_limit {
            let mut refusal = ErrorResponse::new(Some("request headers too large".into()));
            *refusal.status_mut() =
                tokio_tungstenite::tungstenite::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            return Err(refusal);
        }
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| p.eq_ignore_ascii_case("mqtt") || p.eq_ignore_ascii_case("mqttv3.1"))
            .map(str::to_owned);
        if let Some(p) = offered.and_then(|p| HeaderValue::from_str(&p).ok()) {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", p);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback).await?;
    Ok(WsByteStream {
        inner: ws,
        pending: Bytes::new(),
    })
}

/// A WebSocket seen as a stream of bytes.
pub struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    /// What is left of the last binary frame.
    pending: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                // Pings are answered by tungstenite on the next flush.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "[MQTT-6.0.0-1] MQTT over WebSockets uses binary frames",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
