//! The PTY device: opening a terminal pair, making it the shell's
//! controlling terminal, sizing it, and non-blocking reads and writes on the
//! master. The `unsafe` of PTY handling lives here.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::PtyMaster;
use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, SetArg};
use tokio::io::unix::AsyncFd;

/// `ioctl`s nix has no wrapper for.
mod ioctl {
    nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);
    nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
}

/// Runs in the forked child before exec: a session of its own, with
/// the terminal (already on fd 0) as its controlling terminal, so job
/// control and ^C work and closing the master hangs up everything in it.
pub(super) fn become_terminal_leader() -> io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: fd 0 is the terminal slave; TIOCSCTTY takes an int.
    unsafe { ioctl::tiocsctty(0, 0) }?;
    Ok(())
}

/// A new terminal of the given size: the master registered with the reactor
/// (non-blocking) and the slave. Both are close-on-exec from the start, so no
/// concurrently spawned process inherits them.
pub(super) fn open_pty(cols: u16, rows: u16) -> io::Result<(AsyncFd<PtyMaster>, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    // std opens with O_CLOEXEC.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)?;
    set_winsize(&master, cols, rows)?;
    // Line editing in cooked mode (backspace over a multi-byte character)
    // needs to know the terminal speaks UTF-8, like the LANG we set.
    let mut termios = tcgetattr(&slave)?;
    termios.input_flags |= InputFlags::IUTF8;
    tcsetattr(&slave, SetArg::TCSANOW, &termios)?;
    // SAFETY: the PtyMaster owns its fd and is moved into the AsyncFd, so the
    // fd stays open and the same for the AsyncFd's whole life.
    let master = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
    Ok((master, OwnedFd::from(slave)))
}

pub(super) fn set_winsize(master: &PtyMaster, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the fd is an open PTY master and `ws` is a valid winsize that
    // outlives the call; TIOCSWINSZ only reads it.
    unsafe { ioctl::tiocswinsz(master.as_raw_fd(), &ws) }?;
    Ok(())
}

pub(super) async fn read_some(master: &AsyncFd<PtyMaster>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| {
            let mut m: &PtyMaster = fd.get_ref();
            m.read(buf)
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

pub(super) async fn write_all(master: &AsyncFd<PtyMaster>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| {
            let mut m: &PtyMaster = fd.get_ref();
            m.write(data)
        }) {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}
