//! The one answer to "does it fit in one datagram": packs a sequence of items, in order,
//! into batches whose postcard encoding as a `Vec` (a varint count, then the items) fits
//! a datagram payload. Peers, client replies, client requests and course mode all pack
//! with it.

use serde::Serialize;

/// What one batch may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackLimit {
    /// Most bytes of a batch's encoding, count prefix included.
    pub payload_bytes_max: usize,
    /// Most items in a batch.
    pub items_max: usize,
}

impl PackLimit {
    /// A limit on bytes alone.
    pub fn bytes(payload_bytes_max: usize) -> PackLimit {
        PackLimit {
            payload_bytes_max,
            items_max: usize::MAX,
        }
    }
}

/// Items packed into batches, and the items too large for any batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed<T> {
    /// The batches, in the items' order, none empty.
    pub batches: Vec<Vec<T>>,
    /// Items whose encoding alone, with a count prefix of one, exceeds the byte limit:
    /// left out, in their order. What to do with them is the caller's decision.
    pub too_large: Vec<T>,
}

/// Bytes of the count postcard writes before a sequence of `count` items (a varint),
/// worked out rather than serialized: the packers ask once per item.
pub fn count_prefix_bytes(count: usize) -> usize {
    crate::varint::len(count as u64)
}

/// Bytes of `item`'s postcard encoding.
pub fn encoded_bytes<T: Serialize + ?Sized>(item: &T) -> usize {
    postcard::experimental::serialized_size(item).expect("protocol types always encode")
}

/// `item`'s postcard encoding in a `Vec` of exactly its length: one sizing pass and one
/// allocation, where `postcard::to_stdvec` grows its `Vec` from empty by doubling (about
/// ten reallocations and copies for a kilobyte, the size of a batch of puts). Exact, a
/// `Bytes` made from it takes the buffer as it is, without another allocation.
pub fn encode_exact<T: Serialize + ?Sized>(item: &T) -> Vec<u8> {
    encode_known(item, encoded_bytes(item))
}

/// [`encode_exact`] of an item whose encoded length `len` the caller has counted
/// already (from its parts' [`encoded_bytes`], as it sized them against a limit).
pub fn encode_known<T: Serialize + ?Sized>(item: &T, len: usize) -> Vec<u8> {
    let out =
        postcard::to_extend(item, Vec::with_capacity(len)).expect("protocol types always encode");
    debug_assert_eq!(out.len(), len, "the counted length is the encoding's");
    out
}

/// Packs `items` into as few batches as a greedy in-order fill gives: each batch takes
/// items until the next one would exceed a limit.
pub fn pack<T: Serialize>(items: impl IntoIterator<Item = T>, limit: PackLimit) -> Packed<T> {
    pack_by(items, |item| encoded_bytes(item), limit)
}

/// [`pack`] for items whose encoded size the caller knows (`bytes_of`), such as items
/// encoded already (see [`encode_encoded`]).
pub fn pack_by<T>(
    items: impl IntoIterator<Item = T>,
    bytes_of: impl Fn(&T) -> usize,
    limit: PackLimit,
) -> Packed<T> {
    let mut packed = Packed {
        batches: Vec::new(),
        too_large: Vec::new(),
    };
    let mut batch: Vec<T> = Vec::new();
    let mut fill = Fill::new(limit);
    for item in items {
        let bytes = bytes_of(&item);
        if !fits_alone(bytes, limit) {
            packed.too_large.push(item);
            continue;
        }
        if fill.add(bytes) {
            packed.batches.push(std::mem::take(&mut batch));
        }
        batch.push(item);
    }
    if !batch.is_empty() {
        packed.batches.push(batch);
    }
    packed
}

/// The cut [`pack_by`] makes, as ranges of indexes into the items whose encoded sizes
/// `sizes` gives, written into `batches` (cleared first): for callers that keep their
/// items in a buffer they reuse. Every item must fit a batch alone ([`fits_alone`]);
/// the caller sets aside the others first, as [`Packed::too_large`] would hold them.
pub fn pack_ranges(
    sizes: impl IntoIterator<Item = usize>,
    limit: PackLimit,
    batches: &mut Vec<std::ops::Range<usize>>,
) {
    batches.clear();
    let mut fill = Fill::new(limit);
    let mut start = 0;
    let mut end = 0;
    for bytes in sizes {
        assert!(fits_alone(bytes, limit), "an item too large for any batch");
        if fill.add(bytes) {
            batches.push(start..end);
            start = end;
        }
        end += 1;
    }
    if start < end {
        batches.push(start..end);
    }
}

/// True if an item of `bytes` encoded bytes fits a batch of its own under `limit`.
pub fn fits_alone(bytes: usize, limit: PackLimit) -> bool {
    count_prefix_bytes(1) + bytes <= limit.payload_bytes_max
}

/// The batch being filled, for the packers' one greedy rule: a batch takes items in
/// order until the next one would exceed a limit.
struct Fill {
    limit: PackLimit,
    items: usize,
    items_bytes: usize,
}

impl Fill {
    fn new(limit: PackLimit) -> Fill {
        assert!(limit.items_max > 0, "a batch must hold at least one item");
        Fill {
            limit,
            items: 0,
            items_bytes: 0,
        }
    }

    /// Adds an item of `bytes` (one that fits alone); true if it had to start a new
    /// batch, the current one being full and not empty.
    fn add(&mut self, bytes: usize) -> bool {
        let full = self.items == self.limit.items_max
            || count_prefix_bytes(self.items + 1) + self.items_bytes + bytes
                > self.limit.payload_bytes_max;
        let starts_new = full && self.items > 0;
        if starts_new {
            (self.items, self.items_bytes) = (0, 0);
        }
        self.items += 1;
        self.items_bytes += bytes;
        starts_new
    }
}

/// Appends to `out` the postcard encoding of a `Vec` whose items are postcard-encoded
/// already: byte for byte what encoding the decoded items as a `Vec` gives.
pub fn encode_encoded(items: &[Vec<u8>], out: &mut Vec<u8>) {
    *out = postcard::to_extend(&items.len(), std::mem::take(out)).expect("a usize always encodes");
    for item in items {
        out.extend_from_slice(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items of 10 encoded bytes each (a 9-byte array behind its one-byte length).
    fn items(n: u8) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i; 9]).collect()
    }

    fn sizes<T>(p: &Packed<T>) -> Vec<usize> {
        p.batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn encode_exact_is_the_encoding_in_a_buffer_of_its_length() {
        let value = (
            7u64,
            vec![vec![1u8; 300], vec![], vec![2u8; 5]],
            "text",
            Some(-3i64),
        );
        let exact = encode_exact(&value);
        assert_eq!(exact, postcard::to_stdvec(&value).unwrap());
        assert_eq!(exact.capacity(), exact.len());
        let parts = [vec![1u8; 300], vec![2u8; 5]];
        let len = count_prefix_bytes(parts.len()) + parts.iter().map(encoded_bytes).sum::<usize>();
        assert_eq!(
            encode_known(&parts[..], len),
            postcard::to_stdvec(&parts[..]).unwrap()
        );
    }

    #[test]
    fn a_batch_fills_to_exactly_the_limit() {
        let p = pack(items(7), PackLimit::bytes(1 + 3 * 10));
        assert_eq!(sizes(&p), vec![3, 3, 1]);
        for b in &p.batches {
            assert!(postcard::to_stdvec(b).unwrap().len() <= 31);
        }
        assert_eq!(postcard::to_stdvec(&p.batches[0]).unwrap().len(), 31);
        assert!(p.too_large.is_empty());
    }

    #[test]
    fn one_byte_over_starts_a_new_batch() {
        let p = pack(items(6), PackLimit::bytes(3 * 10));
        assert_eq!(sizes(&p), vec![2, 2, 2]);
    }

    #[test]
    fn an_item_larger_than_a_datagram_is_left_out_and_the_rest_kept_in_order() {
        let mut v = items(4);
        v.insert(2, vec![0xee; 40]);
        let p = pack(v.clone(), PackLimit::bytes(31));
        assert_eq!(p.too_large, vec![v[2].clone()]);
        let flat: Vec<_> = p.batches.into_iter().flatten().collect();
        assert_eq!(flat, [&v[..2], &v[3..]].concat());
        // An item that fits alone exactly is not too large.
        let p = pack(vec![vec![0u8; 29]], PackLimit::bytes(31));
        assert_eq!(sizes(&p), vec![1]);
    }

    #[test]
    fn count_prefix_lengths_are_postcards() {
        for n in (0..100_000).chain([127, 128, 16_383, 16_384, usize::MAX / 2, usize::MAX]) {
            let postcards = postcard::experimental::serialized_size(&n).unwrap();
            assert_eq!(count_prefix_bytes(n), postcards, "{n}");
        }
    }

    proptest::proptest! {
        #[test]
        fn pack_ranges_cuts_as_pack_by_cuts(
            lens in proptest::collection::vec(0usize..700, 0..400),
            payload_bytes_max in 1usize..2000,
            items_max in 1usize..300,
        ) {
            let limit = PackLimit { payload_bytes_max, items_max };
            let items: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| vec![i as u8; len])
                .collect();
            let want = pack_by(items.clone(), Vec::len, limit).batches;
            let kept: Vec<Vec<u8>> =
                items.into_iter().filter(|i| fits_alone(i.len(), limit)).collect();
            let mut batches = vec![0..1, 5..9];
            pack_ranges(kept.iter().map(Vec::len), limit, &mut batches);
            let got: Vec<Vec<Vec<u8>>> = batches.into_iter().map(|r| kept[r].to_vec()).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn the_count_prefix_grows_at_128_items() {
        // 128 one-byte items need a two-byte count: 130 bytes, not 129.
        let ones: Vec<u8> = vec![1; 128];
        assert_eq!(pack(ones.clone(), PackLimit::bytes(130)).batches.len(), 1);
        assert_eq!(sizes(&pack(ones, PackLimit::bytes(129))), vec![127, 1]);
    }

    #[test]
    fn the_item_count_limit_holds() {
        let p = pack(
            items(5),
            PackLimit {
                payload_bytes_max: 1000,
                items_max: 2,
            },
        );
        assert_eq!(sizes(&p), vec![2, 2, 1]);
    }

    #[test]
    fn encoded_items_pack_and_concatenate_as_the_whole_vector_would() {
        let values: Vec<String> = (0..200).map(|i| "x".repeat(i % 7)).collect();
        let encoded: Vec<Vec<u8>> = values
            .iter()
            .map(|v| postcard::to_stdvec(v).unwrap())
            .collect();
        let p = pack_by(encoded, Vec::len, PackLimit::bytes(300));
        let mut at = 0;
        for batch in &p.batches {
            let mut out = Vec::new();
            encode_encoded(batch, &mut out);
            assert!(out.len() <= 300);
            assert_eq!(
                out,
                postcard::to_stdvec(&values[at..at + batch.len()]).unwrap()
            );
            at += batch.len();
        }
        assert_eq!(at, values.len());
    }
}
