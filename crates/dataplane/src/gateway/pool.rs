//! Copy buffers, taken only while data is in flight: an idle session holds none. Each
//! runtime thread keeps a few of its own, so the copy loops do not meet on one lock for
//! every read; the shared free list takes the overflow.

use std::cell::RefCell;
use std::sync::Mutex;

pub(crate) const SIZE: usize = 64 * 1024;
/// Buffers kept on the shared free list.
const KEEP: usize = 256;
/// Buffers each thread keeps for itself.
const LOCAL_KEEP: usize = 16;

static FREE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn take() -> Box<[u8]> {
    if let Some(b) = LOCAL.with(|l| l.borrow_mut().pop()) {
        return b;
    }
    FREE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| vec![0u8; SIZE].into_boxed_slice())
}

pub(crate) fn give(buf: Box<[u8]>) {
    let overflow = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() < LOCAL_KEEP {
            l.push(buf);
            None
        } else {
            Some(buf)
        }
    });
    if let Some(buf) = overflow {
        let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back() {
        let a = take();
        assert_eq!(a.len(), SIZE);
        let p = a.as_ptr();
        give(a);
        let b = take();
        assert_eq!(b.as_ptr(), p, "a thread gets its own buffer back first");
        give(b);
    }
}
