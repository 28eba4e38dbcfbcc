//! Connecting to the server under test.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};

use super::cli::Target;

/// Connects to `target.to` within the target's timeout, and applies that timeout to every
/// later read and write so a stalled path fails the client instead of hanging the test.
pub fn connect(target: &Target) -> io::Result<TcpStream> {
    let timeout = target.timeout();
    let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing");
    for addr in target.to.to_socket_addrs()? {
        let connected = match target.mark {
            None => TcpStream::connect_timeout(&addr, timeout),
            Some(mark) => {
                let sock =
                    socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
                sock.set_mark(mark)?;
                sock.connect_timeout(&addr.into(), timeout).map(|()| sock.into())
            }
        };
        match connected {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}
