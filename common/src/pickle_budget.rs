//! The pickle pre-scan: walks a pickle's opcodes the way serde-pickle will, without
//! building values, and refuses streams that would exceed the decoding budget before
//! serde-pickle ever sees them.
//!
//! It simulates serde-pickle's stack abstractly: every stack item and memo slot
//! carries only its estimated decoded size, its nesting depth and a kind. Because
//! serde-pickle copies (`DUP` clones the value; every memo `GET` becomes a full copy
//! when the value is converted), copies are counted in full. Checked at every opcode:
//! nesting depth (containers and open MARKs), the size of each value, the total
//! allocated, the steps (opcodes plus copied values) and declared lengths against
//! what is left of the input. Two constructs Python never writes are refused because
//! they would make the estimate unsound: changing a memoized value after a `GET` of it
//! (only recursive structures do that, and serde-pickle cannot decode those anyway)
//! and storing two values under one memo id.
//!
//! Malformed streams (truncation, stack underflow, unknown opcodes) end the scan with
//! `Ok`: serde-pickle stops at the same point with its own error, having done no more
//! than the scan has checked.

use crate::budget::{Budget, Exceeded, Limit, Place, MAX_INT_DIGITS, NODE_BYTES};
use std::collections::HashMap;

/// What a memo entry costs serde-pickle (a B-tree entry holding its value).
const MEMO_BYTES: u64 = 64;
/// What each MARK costs serde-pickle: a fresh stack `Vec::with_capacity(128)`.
const MARK_BYTES: u64 = 128 * 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    Str,
    Tuple,
    /// list, dict or set: something APPEND/SETITEM/ADDITEMS may grow
    Mutable,
}

/// A value's summary: estimated decoded size (saturating), nesting depth, kind.
#[derive(Debug, Clone, Copy)]
struct Shape {
    bytes: u64,
    depth: usize,
    kind: Kind,
}

/// A stack item: a value of its own, or a reference to a memo slot (what PUT and GET
/// push), read through the slot.
#[derive(Debug, Clone, Copy)]
enum Item {
    Own(Shape),
    Ref(u32),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    shape: Shape,
    /// A GET has referenced it: from now on it must not change.
    shared: bool,
}

struct Frame {
    items: Vec<Item>,
    /// The MARK that opened this frame came right after a list/dict/set (its items).
    over_mutable: bool,
}

struct Scan<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being simulated.
    op_at: usize,
    budget: &'a Budget,
    frames: Vec<Frame>,
    memo: HashMap<u32, Slot>,
    allocated: u64,
    steps: u64,
}

/// The scan ends: `Ok` for malformed input left to serde-pickle, `Err` for a limit.
type Flow<T> = Result<T, Option<Exceeded>>;

/// Checks a pickle stream against `budget`.
pub fn scan(data: &[u8], budget: &Budget) -> Result<(), Exceeded> {
    let mut s = Scan {
        data,
        pos: 0,
        op_at: 0,
        budget,
        frames: vec![Frame {
            items: Vec::new(),
            over_mutable: false,
        }],
        memo: HashMap::new(),
        allocated: 0,
        steps: 0,
    };
    match s.run() {
        Ok(()) | Err(None) => Ok(()),
        Err(Some(e)) => Err(e),
    }
}

const fn scalar(bytes: u64) -> Shape {
    Shape {
        bytes,
        depth: 0,
        kind: Kind::Scalar,
    }
}

impl Scan<'_> {
    fn run(&mut self) -> Flow<()> {
        loop {
            self.op_at = self.pos;
            let op = self.byte()?;
            self.steps += 1;
            if self.steps > self.budget.max_steps {
                return self.refuse(
                    Limit::Work {
                        max: self.budget.max_steps,
                    },
                    false,
                );
            }
            match op {
                b'\x80' => {
                    self.take(1)?; // PROTO
                }
                b'\x95' => {
                    let n = self.uint_le(8)?; // FRAME: serde-pickle ignores it; Python never lies
                    self.declared(n)?;
                }
                b'.' => {
                    // STOP: the top is the result; the rest of the stack is dropped.
                    self.pop()?;
                    return Ok(());
                }
                b'(' => {
                    // MARK
                    if self.frames.len() > self.budget.max_depth {
                        return self.refuse(
                            Limit::Depth {
                                max: self.budget.max_depth,
                            },
                            false,
                        );
                    }
                    self.alloc(MARK_BYTES, false)?;
                    let over_mutable = match self.cur().last() {
                        Some(&it) => self.shape(it).kind == Kind::Mutable,
                        None => false,
                    };
                    self.frames.push(Frame {
                        items: Vec::new(),
                        over_mutable,
                    });
                }
                b'0' => {
                    // POP: the top item, or the mark when the frame is empty
                    if self.cur().is_empty() {
                        self.pop_mark()?;
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?; // POP_MARK
                }
                b'2' => {
                    // DUP clones the top (through a memo reference too)
                    let Some(&top) = self.cur().last() else {
                        return Err(None);
                    };
                    let sh = self.shape(top);
                    self.copy(sh.bytes)?;
                    self.push_copy(sh)?;
                }
                b'p' | b'q' | b'r' | b'\x94' => {
                    let id = match op {
                        b'p' => self.line_number()?,
                        b'q' => self.uint(1)? as u32,
                        b'r' => self.uint_le(4)? as u32,
                        _ => self.memo.len() as u32,
                    };
                    self.memoize(id)?;
                }
                b'g' | b'h' | b'j' => {
                    let id = match op {
                        b'g' => self.line_number()?,
                        b'h' => self.uint(1)? as u32,
                        _ => self.uint_le(4)? as u32,
                    };
                    let Some(slot) = self.memo.get_mut(&id) else {
                        return Err(None); // serde-pickle: missing memo
                    };
                    slot.shared = true;
                    let bytes = slot.shape.bytes;
                    // Converting the value copies it once per reference.
                    self.copy(bytes)?;
                    self.alloc(NODE_BYTES, false)?;
                    self.cur_mut().push(Item::Ref(id));
                }
                b'N' | b'\x88' | b'\x89' => self.push_own(scalar(NODE_BYTES))?,
                b'I' | b'F' => {
                    self.line()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'L' => {
                    // Sign and the protocol-0 `L` suffix aside, the digits.
                    let digits = self.line()?.len().saturating_sub(1);
                    if digits > MAX_INT_DIGITS + 1 {
                        return self.refuse(
                            Limit::Digits {
                                digits,
                                max: MAX_INT_DIGITS,
                            },
                            false,
                        );
                    }
                    self.push_own(scalar(NODE_BYTES + digits as u64))?;
                }
                b'S' | b'V' => {
                    // Escaped text: a raw byte may become two bytes of UTF-8.
                    let n = self.line()?.len() as u64;
                    self.push_str(2 * n)?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'J' => {
                    self.take(4)?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'K' => {
                    self.take(1)?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'M' => {
                    self.take(2)?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'\x8a' | b'\x8b' => {
                    // LONG1, LONG4: little-endian two's complement bytes
                    let n = if op == b'\x8a' {
                        self.uint(1)?
                    } else {
                        self.signed_len()?
                    };
                    self.declared(n)?;
                    self.take(n as usize)?;
                    self.push_own(scalar(NODE_BYTES + n))?;
                }
                b'C' | b'U' | b'\x8c' => {
                    let n = self.uint(1)?;
                    self.counted(n)?;
                }
                b'B' | b'X' => {
                    let n = self.uint_le(4)?;
                    self.counted(n)?;
                }
                b'T' => {
                    let n = self.signed_len()?;
                    self.counted(n)?;
                }
                b'\x8d' | b'\x8e' | b'\x96' => {
                    let n = self.uint_le(8)?;
                    self.counted(n)?;
                }
                b')' => self.push_own(Shape {
                    bytes: NODE_BYTES,
                    depth: 1,
                    kind: Kind::Tuple,
                })?,
                b']' | b'}' | b'\x8f' => self.push_own(Shape {
                    bytes: NODE_BYTES,
                    depth: 1,
                    kind: Kind::Mutable,
                })?,
                b'\x85' | b'\x86' | b'\x87' => {
                    let n = usize::from(op - b'\x84');
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    self.build(&items, Kind::Tuple)?;
                }
                b't' | b'l' | b'd' | b'\x91' => {
                    let items = self.pop_mark()?;
                    let kind = if op == b't' {
                        Kind::Tuple
                    } else {
                        Kind::Mutable
                    };
                    self.build(&items, kind)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.grow_top(&[v])?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.grow_top(&[k, v])?;
                }
                b'e' | b'u' | b'\x90' => {
                    let items = self.pop_mark()?;
                    self.grow_top(&items)?;
                }
                b'c' => {
                    self.line()?;
                    self.line()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'\x93' => {
                    // STACK_GLOBAL: two names, resolved (copied) out of the memo
                    self.pop_resolve()?;
                    self.pop_resolve()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'R' => {
                    // REDUCE: the result is at most what the argument tuple holds,
                    // and resolving it out of the memo copies it.
                    let args = self.pop_resolve()?;
                    self.pop_resolve()?;
                    self.copy(args.bytes)?;
                    self.push_copy(Shape {
                        kind: Kind::Mutable,
                        ..args
                    })?;
                }
                b'i' => {
                    self.line()?;
                    self.line()?;
                    self.pop_mark()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'o' => {
                    self.pop_mark()?;
                    self.pop()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'\x81' => {
                    self.pop()?;
                    self.pop()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'\x92' => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push_own(scalar(NODE_BYTES))?;
                }
                b'b' => {
                    // BUILD: the state replaces the object stand-in
                    let state = self.pop()?;
                    self.pop()?;
                    self.cur_mut().push(state);
                }
                _ => return Err(None), // serde-pickle: unsupported opcode
            }
        }
    }

    // ---- the abstract stack ----

    fn cur(&self) -> &Vec<Item> {
        &self.frames.last().expect("one frame always").items
    }

    fn cur_mut(&mut self) -> &mut Vec<Item> {
        &mut self.frames.last_mut().expect("one frame always").items
    }

    fn shape(&self, it: Item) -> Shape {
        match it {
            Item::Own(sh) => sh,
            Item::Ref(id) => self.memo.get(&id).map(|s| s.shape).unwrap_or(scalar(0)),
        }
    }

    fn pop(&mut self) -> Flow<Item> {
        self.cur_mut().pop().ok_or(None)
    }

    fn pop_mark(&mut self) -> Flow<Vec<Item>> {
        if self.frames.len() == 1 {
            return Err(None); // serde-pickle: stack underflow
        }
        Ok(self.frames.pop().expect("checked").items)
    }

    /// Pops and, for a memo reference, resolves it: serde-pickle clones the value.
    fn pop_resolve(&mut self) -> Flow<Shape> {
        let it = self.pop()?;
        let sh = self.shape(it);
        if let Item::Ref(_) = it {
            self.copy(sh.bytes)?;
        }
        Ok(sh)
    }

    /// Pushes a new value, counting its bytes as allocated.
    fn push_own(&mut self, sh: Shape) -> Flow<()> {
        self.check_shape(sh, false)?;
        self.alloc(sh.bytes, false)?;
        self.cur_mut().push(Item::Own(sh));
        Ok(())
    }

    /// Pushes a copy whose bytes [`Scan::copy`] has already counted.
    fn push_copy(&mut self, sh: Shape) -> Flow<()> {
        self.check_shape(sh, false)?;
        self.cur_mut().push(Item::Own(sh));
        Ok(())
    }

    fn push_str(&mut self, len: u64) -> Flow<()> {
        self.push_own(Shape {
            bytes: NODE_BYTES + len,
            depth: 0,
            kind: Kind::Str,
        })
    }

    /// A counted string or bytes value of `n` bytes.
    fn counted(&mut self, n: u64) -> Flow<()> {
        self.declared(n)?;
        self.take(n as usize)?;
        self.push_str(n)
    }

    /// A container made of `items` (already popped): their sizes add up, one level
    /// deeper than the deepest.
    fn build(&mut self, items: &[Item], kind: Kind) -> Flow<()> {
        let mut sh = Shape {
            bytes: NODE_BYTES,
            depth: 1,
            kind,
        };
        for &it in items {
            let c = self.shape(it);
            sh.bytes = sh.bytes.saturating_add(c.bytes);
            sh.depth = sh.depth.max(c.depth + 1);
        }
        self.check_shape(sh, false)?;
        // The children were counted when made; the container adds one node.
        self.alloc(NODE_BYTES, false)?;
        self.cur_mut().push(Item::Own(sh));
        Ok(())
    }

    /// APPEND(S), SETITEM(S), ADDITEMS: `items` go into the top value.
    fn grow_top(&mut self, items: &[Item]) -> Flow<()> {
        let Some(&top) = self.cur().last() else {
            return Err(None); // serde-pickle: stack underflow
        };
        let mut sh = self.shape(top);
        for &it in items {
            let c = self.shape(it);
            sh.bytes = sh.bytes.saturating_add(c.bytes);
            sh.depth = sh.depth.max(c.depth + 1);
        }
        self.check_shape(sh, true)?;
        match top {
            Item::Own(_) => {
                *self.cur_mut().last_mut().expect("checked") = Item::Own(sh);
            }
            Item::Ref(id) => {
                let Some(slot) = self.memo.get_mut(&id) else {
                    return Err(None);
                };
                if slot.shared {
                    return self.refuse(Limit::SharedMutation { memo: id }, true);
                }
                slot.shape = sh;
            }
        }
        Ok(())
    }

    fn memoize(&mut self, id: u32) -> Flow<()> {
        let it = self.pop()?;
        if self.memo.contains_key(&id) {
            self.cur_mut().push(it); // for the place of the error
            return self.refuse(Limit::MemoReuse { memo: id }, true);
        }
        let sh = self.shape(it);
        if let Item::Ref(_) = it {
            self.copy(sh.bytes)?; // serde-pickle clones a memoized value memoized again
        }
        self.alloc(MEMO_BYTES, false)?;
        self.memo.insert(
            id,
            Slot {
                shape: sh,
                shared: false,
            },
        );
        self.cur_mut().push(Item::Ref(id));
        Ok(())
    }

    // ---- budget accounting ----

    /// Checks a value about to sit in the current frame. Its depth counts the open
    /// MARKs too: in Python's pickles every MARK's items end up inside a container, so
    /// a value nested `d` deep under `k` MARKs ends up at least `d + k` deep, and the
    /// depth is refused where it is built, not where the outermost tuple closes.
    fn check_shape(&self, sh: Shape, modifies_top: bool) -> Flow<()> {
        if sh.depth + (self.frames.len() - 1) > self.budget.max_depth {
            return self.refuse(
                Limit::Depth {
                    max: self.budget.max_depth,
                },
                modifies_top,
            );
        }
        if sh.bytes > self.budget.max_bytes {
            return self.refuse(
                Limit::Size {
                    max: self.budget.max_bytes,
                },
                modifies_top,
            );
        }
        Ok(())
    }

    fn alloc(&mut self, n: u64, modifies_top: bool) -> Flow<()> {
        self.allocated = self.allocated.saturating_add(n);
        if self.allocated > self.budget.max_bytes {
            return self.refuse(
                Limit::Size {
                    max: self.budget.max_bytes,
                },
                modifies_top,
            );
        }
        Ok(())
    }

    /// A full copy of a value of `bytes`: allocation and steps.
    fn copy(&mut self, bytes: u64) -> Flow<()> {
        self.steps = self.steps.saturating_add(bytes.div_ceil(NODE_BYTES));
        if self.steps > self.budget.max_steps {
            return self.refuse(
                Limit::Work {
                    max: self.budget.max_steps,
                },
                false,
            );
        }
        self.alloc(bytes, false)
    }

    fn refuse<T>(&self, limit: Limit, modifies_top: bool) -> Flow<T> {
        Err(Some(Exceeded {
            limit,
            offset: self.op_at,
            place: self.place(modifies_top),
        }))
    }

    /// Best-effort: where in `(func_name, instance, args, kwargs)` the opcode being
    /// simulated sits, assuming Python's layout: the 4-tuple is MARK … TUPLE; args is
    /// a tuple, MARK … TUPLE or up to three items and TUPLE1-3; a list, dict or set is
    /// pushed empty and then filled, so a run of them at the top of a frame is one
    /// element being built (`[[[…]]]`). Beyond that layout it says `Whole` or `Args`.
    fn place(&self, modifies_top: bool) -> Place {
        if self.frames.len() < 2 || !self.frames[0].items.is_empty() {
            return Place::Whole;
        }
        // The position, in frame k, of the element being built.
        let position = |k: usize| -> usize {
            let items = &self.frames[k].items;
            let into_top = match self.frames.get(k + 1) {
                Some(next) => next.over_mutable,
                None => modifies_top,
            };
            if !into_top || items.is_empty() {
                return items.len();
            }
            let mut i = items.len() - 1;
            while i > 0 && self.shape(items[i - 1]).kind == Kind::Mutable {
                i -= 1;
            }
            i
        };
        let f1 = &self.frames[1].items;
        let top = position(1);
        let args_done = top > 2
            && f1
                .get(2)
                .is_some_and(|&it| self.shape(it).kind == Kind::Tuple);
        match top {
            0 => Place::FuncName,
            1 => Place::Instance,
            _ if args_done => Place::Kwargs,
            2 if self.frames.len() > 2 && !self.frames[2].over_mutable => {
                Place::Argument(position(2))
            }
            n if n <= 4 => Place::Argument(n - 2),
            _ => Place::Args,
        }
    }

    // ---- reading the stream ----

    fn byte(&mut self) -> Flow<u8> {
        let b = *self.data.get(self.pos).ok_or(None)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Flow<&[u8]> {
        let end = self.pos.checked_add(n).ok_or(None)?;
        let s = self.data.get(self.pos..end).ok_or(None)?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Flow<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0, |a, &b| (a << 8) | u64::from(b)))
    }

    fn uint_le(&mut self, n: usize) -> Flow<u64> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0, |a, &b| (a << 8) | u64::from(b)))
    }

    /// An i32 length (BINSTRING, LONG4); negative ones are serde-pickle's error.
    fn signed_len(&mut self) -> Flow<u64> {
        let n = self.uint_le(4)? as u32 as i32;
        u64::try_from(n).map_err(|_| None)
    }

    /// A length prefix must not exceed what is left.
    fn declared(&self, n: u64) -> Flow<()> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return self.refuse(
                Limit::DeclaredLength {
                    declared: n,
                    remaining,
                },
                false,
            );
        }
        Ok(())
    }

    /// A newline-terminated argument (without the newline). Without one, serde-pickle
    /// reads to the end and fails at the next opcode.
    fn line(&mut self) -> Flow<&[u8]> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(None);
        };
        self.pos += n + 1;
        let line = &rest[..n];
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn line_number(&mut self) -> Flow<u32> {
        let line = self.line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &[u8]) -> Result<(), Exceeded> {
        scan(p, &Budget::for_input(p.len()))
    }

    #[test]
    fn python_pickles_pass() {
        // pickle.dumps(("mymod.add", None, (2, 3), {}), protocol=p) for p in 0..=5
        let samples: [&[u8]; 6] = [
            b"(Vmymod.add\np0\nN(I2\nI3\ntp1\n(dp2\ntp3\n.",
            b"(X\t\x00\x00\x00mymod.addq\x00N(K\x02K\x03tq\x01}q\x02tq\x03.",
            b"\x80\x02(X\t\x00\x00\x00mymod.addq\x00NK\x02K\x03\x86q\x01}q\x02tq\x03.",
            b"\x80\x03(X\t\x00\x00\x00mymod.addq\x00NK\x02K\x03\x86q\x01}q\x02tq\x03.",
            b"\x80\x04\x95\x19\x00\x00\x00\x00\x00\x00\x00(\x8c\tmymod.add\x94NK\x02K\x03\x86\x94}\x94t\x94.",
            b"\x80\x05\x95\x19\x00\x00\x00\x00\x00\x00\x00(\x8c\tmymod.add\x94NK\x02K\x03\x86\x94}\x94t\x94.",
        ];
        for s in samples {
            assert_eq!(check(s), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn deep_list_is_refused_by_depth() {
        let mut p = b"\x80\x02".to_vec();
        p.extend([b']'; 1600]);
        p.extend([b'a'; 1599]);
        p.push(b'.');
        let e = check(&p).unwrap_err();
        assert_eq!(e.limit, Limit::Depth { max: 100 });
        assert_eq!(e.place, Place::Whole);
    }

    #[test]
    fn dup_append_doubling_is_refused_by_size() {
        let mut p = b"\x80\x02]".to_vec();
        for _ in 0..26 {
            p.extend(b"2a");
        }
        p.push(b'.');
        let e = check(&p).unwrap_err();
        assert!(matches!(e.limit, Limit::Size { .. }), "{e:?}");
    }

    #[test]
    fn memo_get_doubling_is_refused_by_size() {
        // l0 = []; l(k+1) = [lk, lk]: 2^k copies once converted
        let mut p = b"\x80\x02]q\x00".to_vec();
        for k in 0u8..40 {
            p.extend([b'(', b'h', k, b'h', k, b'l', b'q', k + 1]);
        }
        p.push(b'.');
        let e = check(&p).unwrap_err();
        assert!(matches!(e.limit, Limit::Size { .. }), "{e:?}");
    }

    #[test]
    fn mark_flood_is_refused_by_depth() {
        let e = check(&[b'('; 1_000_000]).unwrap_err();
        assert_eq!(e.limit, Limit::Depth { max: 100 });
    }

    #[test]
    fn huge_declared_lengths_are_refused() {
        for p in [
            &b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7fabc."[..],
            b"\x80\x04\x8e\x00\x00\x00\x00\x01\x00\x00\x00abc.",
            b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00N.",
            b"X\xff\xff\xff\xffab.",
        ] {
            let e = check(p).unwrap_err();
            assert!(matches!(e.limit, Limit::DeclaredLength { .. }), "{e:?}");
        }
    }

    #[test]
    fn changing_a_shared_value_is_refused() {
        // l = [1]; l.append(l)  (recursive)
        let e = check(b"\x80\x02]q\x00(K\x01h\x00e.").unwrap_err();
        assert_eq!(e.limit, Limit::SharedMutation { memo: 0 });
        let e = check(b"\x80\x02]q\x00]q\x00.").unwrap_err();
        assert_eq!(e.limit, Limit::MemoReuse { memo: 0 });
    }

    #[test]
    fn places_follow_pythons_layout() {
        // ("f", None, (1, [[[…]]]), {}) with the list too deep, protocol 2
        let mut p = b"\x80\x02(X\x01\x00\x00\x00fq\x00NK\x01".to_vec();
        p.extend([b']'; 120]);
        p.extend([b'a'; 119]);
        let e = check(&p).unwrap_err();
        assert_eq!(e.place, Place::Argument(1), "{e:?}");
        // protocol 1: args is MARK … TUPLE
        let mut p = b"(X\x01\x00\x00\x00fq\x00N(K\x01K\x02".to_vec();
        p.extend([b'('; 120]);
        let e = check(&p).unwrap_err();
        assert_eq!(e.place, Place::Argument(2), "{e:?}");
        // kwargs: {"k": [[[…]]]}
        let mut p = b"\x80\x02(X\x01\x00\x00\x00fq\x00N)}q\x01X\x01\x00\x00\x00kq\x02".to_vec();
        p.extend([b']'; 120]);
        p.extend([b'a'; 119]);
        let e = check(&p).unwrap_err();
        assert_eq!(e.place, Place::Kwargs, "{e:?}");
    }
}
