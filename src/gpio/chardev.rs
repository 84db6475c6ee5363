//! One input line through the kernel's GPIO character device, uAPI v2 (Linux 5.10+).
//!
//! `/dev/gpiochip0` needs neither `/dev/gpiomem` (which Debian's kernels do not have) nor
//! `/dev/mem` (root only): membership of the `gpio` group is enough. The layouts and ioctl
//! numbers below are those of the kernel's `include/uapi/linux/gpio.h`; they are the same on
//! every target the agent ships for (aarch64, armv7, ARMv6, x86_64): the structs have no
//! implicit padding (`__aligned_u64` members, checked below) and `_IOWR` is the generic
//! asm-generic/ioctl.h encoding on all of them.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::config::Pull;

/// The character device of the SoC's GPIO controller (54 lines on a BCM2835/2837).
pub const CHIP: &str = "/dev/gpiochip0";
/// The consumer label `gpioinfo` shows for the requested line.
const CONSUMER: &[u8] = b"doorbell-agent";

/// `libc::ioctl`'s request argument: `c_ulong` on glibc, `c_int` on musl.
#[cfg(not(target_env = "musl"))]
type Request = libc::c_ulong;
#[cfg(target_env = "musl")]
type Request = libc::c_int;

/// `_IOWR(0xB4, nr, size)`: direction read|write (3) << 30, size << 16, type << 8, nr.
const fn iowr(nr: u32, size: usize) -> u32 {
    (3 << 30) | ((size as u32) << 16) | (0xB4 << 8) | nr
}

const GET_LINE: u32 = iowr(0x07, size_of::<LineRequest>());
const GET_VALUES: u32 = iowr(0x0E, size_of::<LineValues>());
// The numbers gpio.h yields (gcc, x86_64 and aarch64).
const _: () = assert!(GET_LINE == 0xC250_B407 && GET_VALUES == 0xC010_B40E);
const GPIO_V2_GET_LINE_IOCTL: Request = GET_LINE as Request;
const GPIO_V2_LINE_GET_VALUES_IOCTL: Request = GET_VALUES as Request;

// `enum gpio_v2_line_flag` and `enum gpio_v2_line_attr_id`.
const FLAG_INPUT: u64 = 1 << 2;
const FLAG_EDGE_RISING: u64 = 1 << 4;
const FLAG_EDGE_FALLING: u64 = 1 << 5;
const FLAG_BIAS_PULL_UP: u64 = 1 << 8;
const FLAG_BIAS_PULL_DOWN: u64 = 1 << 9;
const FLAG_BIAS_DISABLED: u64 = 1 << 10;
const ATTR_ID_DEBOUNCE: u32 = 3;

/// `struct gpio_v2_line_attribute`; `value` is the union of `flags`, `values` (u64) and
/// `debounce_period_us` (u32 at the union's first byte).
#[repr(C)]
#[derive(Clone, Copy)]
struct LineAttribute {
    id: u32,
    padding: u32,
    value: u64,
}

/// `struct gpio_v2_line_config_attribute`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LineConfigAttribute {
    attr: LineAttribute,
    mask: u64,
}

/// `struct gpio_v2_line_config`.
#[repr(C)]
struct LineConfig {
    flags: u64,
    num_attrs: u32,
    padding: [u32; 5],
    attrs: [LineConfigAttribute; 10],
}

/// `struct gpio_v2_line_request`.
#[repr(C)]
struct LineRequest {
    offsets: [u32; 64],
    consumer: [u8; 32],
    config: LineConfig,
    num_lines: u32,
    event_buffer_size: u32,
    padding: [u32; 5],
    fd: i32,
}

/// `struct gpio_v2_line_values`.
#[repr(C)]
struct LineValues {
    bits: u64,
    mask: u64,
}

/// `struct gpio_v2_line_event`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LineEvent {
    timestamp_ns: u64,
    id: u32,
    offset: u32,
    seqno: u32,
    line_seqno: u32,
    padding: [u32; 6],
}

// The sizes and offsets of gpio.h (checked against the header with gcc for x86_64 and
// aarch64).
const _: () = assert!(size_of::<LineAttribute>() == 16);
const _: () = assert!(size_of::<LineConfigAttribute>() == 24);
const _: () = assert!(size_of::<LineConfig>() == 272 && offset_of!(LineConfig, attrs) == 32);
const _: () = assert!(size_of::<LineRequest>() == 592);
const _: () = assert!(offset_of!(LineRequest, consumer) == 256 && offset_of!(LineRequest, config) == 288);
const _: () = assert!(offset_of!(LineRequest, num_lines) == 560 && offset_of!(LineRequest, fd) == 588);
const _: () = assert!(size_of::<LineValues>() == 16);
const _: () = assert!(size_of::<LineEvent>() == 48);

const NO_ATTR: LineConfigAttribute = LineConfigAttribute { attr: LineAttribute { id: 0, padding: 0, value: 0 }, mask: 0 };
const NO_EVENT: LineEvent = LineEvent { timestamp_ns: 0, id: 0, offset: 0, seqno: 0, line_seqno: 0, padding: [0; 6] };

/// The physical edge that wakes the event reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Low to high.
    Rising,
    /// High to low.
    Falling,
}

/// Why a line could not be requested.
#[derive(Debug)]
pub enum LineError {
    /// `/dev/gpiochip0` could not be opened.
    Open(io::Error),
    /// `GPIO_V2_GET_LINE_IOCTL` failed.
    Request(io::Error),
}

impl LineError {
    /// Another consumer holds the line: asking again without kernel debounce will not help.
    pub fn is_busy(&self) -> bool {
        matches!(self, LineError::Request(e) if e.raw_os_error() == Some(libc::EBUSY))
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Open(e) if e.kind() == io::ErrorKind::NotFound => {
                write!(f, "{CHIP} does not exist ({e}): this kernel has no GPIO character device for the board")
            }
            LineError::Open(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                write!(f, "cannot open {CHIP}: {e} (add the service user to the `gpio` group)")
            }
            LineError::Open(e) => write!(f, "cannot open {CHIP}: {e}"),
            LineError::Request(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                write!(f, "GPIO_V2_GET_LINE_IOCTL on {CHIP} failed: {e}: the line is busy, another program holds it (`gpioinfo` names it)")
            }
            LineError::Request(e) => write!(f, "GPIO_V2_GET_LINE_IOCTL on {CHIP} failed: {e}"),
        }
    }
}

/// A requested input line; the kernel releases it when the line is dropped (its fd closed).
#[derive(Debug)]
pub struct Line {
    fd: OwnedFd,
}

impl Line {
    /// Requests line `offset` of `/dev/gpiochip0` as an input with the bias for `pull`,
    /// labelled `doorbell-agent`. With `edge`, the kernel queues an event per such edge
    /// (with its own debounce when `debounce` is given); without, the line is only read.
    pub fn request(offset: u32, pull: Pull, edge: Option<Edge>, debounce: Option<Duration>) -> Result<Line, LineError> {
        let chip = OpenOptions::new().read(true).write(true).open(CHIP).map_err(LineError::Open)?;
        let mut req = line_request(offset, pull, edge, debounce);
        // SAFETY: GPIO_V2_GET_LINE_IOCTL reads and writes one `struct gpio_v2_line_request`, which `req` is (layout asserted above).
        let rc = unsafe { libc::ioctl(chip.as_raw_fd(), GPIO_V2_GET_LINE_IOCTL, &mut req as *mut LineRequest) };
        if rc < 0 {
            return Err(LineError::Request(io::Error::last_os_error()));
        }
        if req.fd <= 0 {
            return Err(LineError::Request(io::Error::other(format!("the kernel returned no line fd ({})", req.fd))));
        }
        // SAFETY: the kernel just created this fd (O_CLOEXEC) for us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(req.fd) };
        Ok(Line { fd })
    }

    /// The physical level of the line now: true = high.
    pub fn level(&self) -> io::Result<bool> {
        let mut values = LineValues { bits: 0, mask: 1 };
        // SAFETY: GPIO_V2_LINE_GET_VALUES_IOCTL reads and writes one `struct gpio_v2_line_values`, which `values` is.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), GPIO_V2_LINE_GET_VALUES_IOCTL, &mut values as *mut LineValues) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("GPIO_V2_LINE_GET_VALUES_IOCTL failed: {e}")));
        }
        Ok(values.bits & 1 != 0)
    }

    /// Waits up to `timeout` for edge events and returns how many arrived (0: none).
    pub fn wait_events(&self, timeout: Duration) -> io::Result<usize> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll() reads and writes exactly the one pollfd it is given.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(io::Error::new(e.kind(), format!("poll on the line fd failed: {e}")));
        }
        if rc == 0 {
            return Ok(0);
        }
        if pfd.revents & libc::POLLIN == 0 {
            return Err(io::Error::other(format!("poll on the line fd: revents {:#x} without POLLIN", pfd.revents)));
        }
        let mut events = [NO_EVENT; 16];
        // SAFETY: read() writes at most size_of_val(&events) bytes into `events`, plain integers valid for any bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), events.as_mut_ptr().cast(), size_of::<[LineEvent; 16]>()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) {
                return Ok(0);
            }
            return Err(io::Error::new(e.kind(), format!("read of line events failed: {e}")));
        }
        if n == 0 {
            // Readable but empty: the fd is gone; an error keeps the caller from spinning.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read of line events: end of file"));
        }
        // The kernel hands out whole events only; only the requested edge is reported.
        Ok(n.unsigned_abs() / size_of::<LineEvent>())
    }
}

/// The `struct gpio_v2_line_request` for one input line with the given bias, edge and debounce.
fn line_request(offset: u32, pull: Pull, edge: Option<Edge>, debounce: Option<Duration>) -> LineRequest {
    let bias = match pull {
        Pull::Up => FLAG_BIAS_PULL_UP,
        Pull::Down => FLAG_BIAS_PULL_DOWN,
        Pull::Off => FLAG_BIAS_DISABLED,
    };
    let edge = match edge {
        None => 0,
        Some(Edge::Rising) => FLAG_EDGE_RISING,
        Some(Edge::Falling) => FLAG_EDGE_FALLING,
    };
    let mut req = LineRequest {
        offsets: [0; 64],
        consumer: [0; 32],
        config: LineConfig { flags: FLAG_INPUT | bias | edge, num_attrs: 0, padding: [0; 5], attrs: [NO_ATTR; 10] },
        num_lines: 1,
        event_buffer_size: 0, // the kernel's default: 16 events per line
        padding: [0; 5],
        fd: 0,
    };
    req.offsets[0] = offset;
    req.consumer[..CONSUMER.len()].copy_from_slice(CONSUMER);
    if let Some(period) = debounce {
        let us = u32::try_from(period.as_micros()).unwrap_or(u32::MAX);
        // The union's u32 member sits at its first byte whatever the byte order.
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&us.to_ne_bytes());
        req.config.num_attrs = 1;
        req.config.attrs[0] = LineConfigAttribute {
            attr: LineAttribute { id: ATTR_ID_DEBOUNCE, padding: 0, value: u64::from_ne_bytes(value) },
            mask: 1, // bit 0: the first (only) requested line
        };
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpio_chardev_line_request_for_a_button() {
        let req = line_request(17, Pull::Up, Some(Edge::Falling), Some(Duration::from_millis(50)));
        assert_eq!((req.offsets[0], req.offsets[1], req.num_lines, req.fd), (17, 0, 1, 0));
        assert_eq!(&req.consumer[..15], b"doorbell-agent\0");
        assert_eq!(req.config.flags, 0x4 | 0x100 | 0x20);
        assert_eq!(req.config.num_attrs, 1);
        let attr = req.config.attrs[0];
        assert_eq!((attr.attr.id, attr.mask), (3, 1));
        // debounce_period_us, the union's u32, in its first four bytes.
        assert_eq!(attr.attr.value.to_ne_bytes(), [50_000u32.to_ne_bytes(), [0; 4]].concat()[..]);

        let polled = line_request(4, Pull::Off, None, None);
        assert_eq!((polled.config.flags, polled.config.num_attrs), (0x4 | 0x400, 0));
        assert_eq!(line_request(4, Pull::Down, Some(Edge::Rising), None).config.flags, 0x4 | 0x200 | 0x10);
    }

    #[test]
    fn gpio_chardev_reads_whole_events_and_names_failed_ioctls() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;

        // The event reader over a socket standing in for the line fd: 2 events, then none.
        let (line_end, mut kernel_end) = UnixStream::pair().unwrap();
        let line = Line { fd: OwnedFd::from(line_end) };
        assert_eq!(line.wait_events(Duration::from_millis(10)).unwrap(), 0);
        kernel_end.write_all(&[0u8; 2 * size_of::<LineEvent>()]).unwrap();
        assert_eq!(line.wait_events(Duration::from_millis(1000)).unwrap(), 2);
        assert_eq!(line.wait_events(Duration::from_millis(10)).unwrap(), 0);
        // The other end gone: an error, not a readable fd read as no events over and over.
        drop(kernel_end);
        assert_eq!(line.wait_events(Duration::from_millis(1000)).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // GET_VALUES on something that is not a line names the ioctl and the OS error.
        let e = line.level().unwrap_err().to_string();
        assert!(e.starts_with("GPIO_V2_LINE_GET_VALUES_IOCTL failed: ") && e.contains("os error"), "{e}");
    }

    #[test]
    fn gpio_chardev_errors_name_the_cause() {
        let busy = LineError::Request(io::Error::from_raw_os_error(libc::EBUSY));
        assert!(busy.is_busy() && busy.to_string().contains("another program holds it"), "{busy}");
        let denied = LineError::Open(io::Error::from_raw_os_error(libc::EACCES));
        assert!(!denied.is_busy() && denied.to_string().contains("`gpio` group"), "{denied}");
        let missing = LineError::Open(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(missing.to_string().contains("/dev/gpiochip0 does not exist"), "{missing}");
    }
}
