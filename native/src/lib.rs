//! otelguard's native BPF ring-buffer consumer (`otelguard_native.RingBuffer`); the sensor's
//! fast lane (`otelguard_native.Lane`, file opens -> OTLP bytes) lives in lane.rs and the
//! detection stage's flat record view (`otelguard_native.FlatView`) in flatview.rs.
//!
//! Reads a `BPF_MAP_TYPE_RINGBUF` map by its fd the way the kernel's ring-buffer ABI lays it
//! out (kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h): page 0 of the map is the consumer
//! page (`consumer_pos`, the only part user space writes), page 1 the producer page
//! (`producer_pos`), and from page 2 the data area, mapped twice in a row so a record that
//! wraps around the end reads as one contiguous slice. Each record starts with an 8-byte header:
//! a u32 length whose top bits are BUSY (reserved, not yet committed: stop there) and DISCARD
//! (committed but thrown away: skip it), then a u32 page offset the kernel uses. Records are
//! 8-byte aligned. `consumer_pos` is advanced after each record is copied out, so the kernel
//! can reuse the space at once.
//!
//! The Python side (src/otelguard/ebpf/ringbuf.py) owns the map fd and validates the map
//! (type, size) from /proc/self/fdinfo; this module only maps and drains. One batch is one
//! call: Python runs once per batch, not once per record. Waiting is epoll on the map fd (the
//! kernel's ring buffer supports poll) with the GIL released.

mod flatview;
mod lane;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use lane::{Lane, LaneRun};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HDR_SZ: u64 = 8;

fn os_error(what: &str) -> PyErr {
    let err = std::io::Error::last_os_error();
    PyOSError::new_err(format!("{what}: {err}"))
}

/// A mapped BPF ring buffer. Not thread-safe on its own: one consumer thread drains it (the
/// kernel's ring buffer has one consumer position).
#[pyclass(module = "otelguard_native")]
struct RingBuffer {
    consumer: usize, // address of the RW consumer page
    producer: usize, // address of the RO producer page; data follows one page later
    page: usize,
    size: usize, // data area bytes (the map's max_entries), a power of two
    epfd: i32,
    records: u64,
    discarded: u64,
    bytes: u64,
}

impl RingBuffer {
    fn consumer_pos(&self) -> &'static AtomicU64 {
        // SAFETY: the consumer page is mapped RW, page aligned, until `release`, which needs
        // &mut self and so cannot run while a reference from here is in use
        unsafe { &*(self.consumer as *const AtomicU64) }
    }

    fn producer_pos(&self) -> &'static AtomicU64 {
        // SAFETY: the producer page is mapped RO (only read atomically) until `release`
        unsafe { &*(self.producer as *const AtomicU64) }
    }

    fn is_open(&self) -> bool {
        self.consumer != 0
    }

    /// Hand up to `max` committed records (skipping discarded ones) to `take`, each as a
    /// slice of the ring valid during the call; returns how many.
    fn consume<F>(&mut self, max: usize, mut take: F) -> PyResult<usize>
    where F: FnMut(&[u8]) -> PyResult<()> {
        let mask = (self.size - 1) as u64;
        let data = self.producer + self.page;
        let cons_atomic = self.consumer_pos();
        let mut cons = cons_atomic.load(Ordering::Acquire);
        let mut taken = 0;
        loop {
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons >= prod || taken >= max {
                return Ok(taken);
            }
            while cons < prod && taken < max {
                let at = data + (cons & mask) as usize;
                // SAFETY: `at` is inside the first copy of the data area; headers are 8-aligned
                let len = unsafe { &*(at as *const AtomicU32) }.load(Ordering::Acquire);
                if len & BUSY_BIT != 0 {
                    return Ok(taken); // not committed yet; its commit wakes the poller
                }
                let n = (len & !(BUSY_BIT | DISCARD_BIT)) as u64;
                if n + HDR_SZ > self.size as u64 {
                    return Err(PyValueError::new_err(format!(
                        "ring buffer record length {n} exceeds the data area ({} bytes)",
                        self.size)));
                }
                if len & DISCARD_BIT == 0 {
                    // SAFETY: the data area is mapped twice, so [at+8, at+8+n) is mapped
                    let sample = unsafe {
                        std::slice::from_raw_parts((at + HDR_SZ as usize) as *const u8, n as usize)
                    };
                    take(sample)?;
                    taken += 1;
                    self.records += 1;
                    self.bytes += n;
                } else {
                    self.discarded += 1;
                }
                cons += (n + HDR_SZ + 7) & !7;
                cons_atomic.store(cons, Ordering::Release);
            }
        }
    }

    /// When nothing is ready: wait at most `timeout_ms` for the kernel's wake-up, GIL released.
    fn wait(&self, py: Python<'_>, timeout_ms: i32) -> PyResult<()> {
        if timeout_ms == 0 || self.available() {
            return Ok(());
        }
        let epfd = self.epfd;
        let rc = py.allow_threads(|| {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: one event buffer of one entry
            let rc = unsafe { libc::epoll_wait(epfd, &mut ev, 1, timeout_ms) };
            if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
        });
        match rc {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(PyOSError::new_err(format!("epoll_wait: {e}"))),
            Ok(_) => Ok(()),
        }
    }

    fn available(&self) -> bool {
        self.consumer_pos().load(Ordering::Acquire) < self.producer_pos().load(Ordering::Acquire)
    }

    fn release(&mut self) {
        if self.is_open() {
            // SAFETY: both mappings were made by `new` with these lengths
            unsafe {
                libc::munmap(self.consumer as *mut libc::c_void, self.page);
                libc::munmap(self.producer as *mut libc::c_void, self.page + 2 * self.size);
                libc::close(self.epfd);
            }
            self.consumer = 0;
            self.producer = 0;
            self.epfd = -1;
        }
    }
}

#[pymethods]
impl RingBuffer {
    /// Map the ring buffer of `map_fd` (not taken over: the caller keeps and closes it) whose
    /// data area is `data_size` bytes (the map's max_entries).
    #[new]
    fn new(map_fd: i32, data_size: usize) -> PyResult<Self> {
        // SAFETY: sysconf has no preconditions
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if data_size == 0 || !data_size.is_power_of_two() || data_size % page != 0 {
            return Err(PyValueError::new_err(format!(
                "ring buffer data size {data_size} is not a power-of-two multiple of the page \
                 size {page}")));
        }
        // SAFETY: plain mmap calls; results checked before use
        let consumer = unsafe {
            libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ | libc::PROT_WRITE,
                       libc::MAP_SHARED, map_fd, 0)
        };
        if consumer == libc::MAP_FAILED {
            return Err(os_error("mmap of the ring buffer's consumer page"));
        }
        let producer = unsafe {
            libc::mmap(std::ptr::null_mut(), page + 2 * data_size, libc::PROT_READ,
                       libc::MAP_SHARED, map_fd, page as libc::off_t)
        };
        if producer == libc::MAP_FAILED {
            let err = os_error("mmap of the ring buffer's producer page and data");
            unsafe { libc::munmap(consumer, page) };
            return Err(err);
        }
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
        if epfd < 0 || unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, map_fd, &mut ev) } < 0 {
            let err = os_error("epoll on the ring buffer map fd");
            unsafe {
                if epfd >= 0 {
                    libc::close(epfd);
                }
                libc::munmap(consumer, page);
                libc::munmap(producer, page + 2 * data_size);
            }
            return Err(err);
        }
        Ok(RingBuffer { consumer: consumer as usize, producer: producer as usize, page,
                        size: data_size, epfd, records: 0, discarded: 0, bytes: 0 })
    }

    /// Up to `max_records` records as bytes; when none is ready, waits at most `timeout_ms`
    /// (0: not at all, negative: forever) for the kernel's wake-up, then drains once more.
    fn drain<'py>(&mut self, py: Python<'py>, max_records: usize, timeout_ms: i32)
                  -> PyResult<Vec<Bound<'py, PyBytes>>> {
        if !self.is_open() {
            return Err(PyValueError::new_err("ring buffer is closed"));
        }
        let mut out = Vec::new();
        let mut push = |sample: &[u8]| {
            out.push(PyBytes::new(py, sample));
            Ok(())
        };
        if self.consume(max_records, &mut push)? == 0 {
            self.wait(py, timeout_ms)?;
            self.consume(max_records, &mut push)?;
        }
        Ok(out)
    }

    /// `drain` through the fast lane (lane.rs): up to `max_records` records as items in ring
    /// order, a LaneRun for each run of records the lane encoded (stamped `observed_ns`) and
    /// the record as bytes for the others. No bytes object is made for an encoded record.
    fn drain_lane<'py>(&mut self, py: Python<'py>, lane: &Bound<'py, Lane>, max_records: usize,
                       timeout_ms: i32, observed_ns: i64) -> PyResult<Bound<'py, PyList>> {
        if !self.is_open() {
            return Err(PyValueError::new_err("ring buffer is closed"));
        }
        let out = PyList::empty(py);
        // borrowed only while consuming: the wait releases the GIL, and the exporter thread
        // registers into the lane meanwhile
        let consume = |ring: &mut Self| -> PyResult<usize> {
            let mut lane = lane.borrow_mut();
            let n = ring.consume(max_records, |sample: &[u8]| {
                lane.take(py, &out, sample, observed_ns, || PyBytes::new(py, sample).into_any())
            })?;
            lane.finish(py, &out)?;
            Ok(n)
        };
        if consume(self)? == 0 {
            self.wait(py, timeout_ms)?;
            consume(self)?;
        }
        Ok(out)
    }

    /// Bytes between the consumer and the producer position (committed or not).
    fn pending(&self) -> PyResult<u64> {
        if !self.is_open() {
            return Err(PyValueError::new_err("ring buffer is closed"));
        }
        let cons = self.consumer_pos().load(Ordering::Acquire);
        Ok(self.producer_pos().load(Ordering::Acquire).saturating_sub(cons))
    }

    /// Records returned so far.
    #[getter]
    fn records(&self) -> u64 {
        self.records
    }

    /// Records the producer discarded (skipped, not returned).
    #[getter]
    fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Payload bytes returned so far.
    #[getter]
    fn payload_bytes(&self) -> u64 {
        self.bytes
    }

    fn close(&mut self) {
        self.release();
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        self.release();
    }
}

#[pymodule]
fn otelguard_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RingBuffer>()?;
    m.add_class::<Lane>()?;
    m.add_class::<LaneRun>()?;
    flatview::register(m)?;
    Ok(())
}
