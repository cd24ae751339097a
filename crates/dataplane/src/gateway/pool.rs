//! Copy buffers, taken only while data is in flight: an idle session holds none.

use std::sync::Mutex;

pub(crate) const SIZE: usize = 64 * 1024;
const KEEP: usize = 256;

static FREE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

pub(crate) fn take() -> Box<[u8]> {
    FREE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| vec![0u8; SIZE].into_boxed_slice())
}

pub(crate) fn give(buf: Box<[u8]>) {
    let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
    if free.len() < KEEP {
        free.push(buf);
    }
}
