//! The items waiting for a batch, and which of them the next batch takes.
//!
//! Items are grouped by priority (lower runs first) and, inside a priority, into two classes:
//! items of small calls (at most `small_call_threshold` items) and items of bulk calls. Each class
//! is first in, first out. Small calls go first so that a lone request is not stuck behind a
//! 100 000-item call, but while small calls keep coming a quarter of every batch still goes to
//! the oldest bulk items, so bulk work never starves.
//!
//! With length-aware packing the next batch is chosen from a window of the items next in that
//! order: the first of them goes (it may be due), joined by items of similar length, or simply
//! the prefix of the window that fits the token budget. Grouping by length lets younger items
//! overtake older ones of an odd length; once an item has been overtaken [`MAX_PASSES`] times,
//! batches form around such overdue items, oldest first, before the first item, so no item is
//! passed over indefinitely. Once the cost of
//! padding is known (see [`crate::costs`]), a sorted batch stops growing where one more item would
//! raise the time each of its items costs: the rest go in batches of their own lengths.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::costs::PaddingCost;
use crate::policy::Packing;

/// Lets the queue skip items whose caller has gone away (cancelled, timed out or already failed).
pub trait Cancellable {
    fn is_cancelled(&self) -> bool;
}

/// One call's worth of items, as a producer hands them over.
#[derive(Debug)]
pub struct Submission<C> {
    pub call: C,
    pub count: usize,
    pub priority: i32,
    pub arrival: Instant,
    /// Per-item lengths for length-aware packing; every item counts 1 without them.
    pub lengths: Option<Vec<usize>>,
}

/// One queued item: the `index`-th item of `call`.
#[derive(Debug, Clone)]
pub struct Entry<C> {
    pub call: C,
    pub index: usize,
    pub arrival: Instant,
    pub length: usize,
    priority: i32,
    small: bool,
    /// How many batches took a younger item and left this one behind.
    passes: u32,
}

#[derive(Debug)]
struct Level<C> {
    small: VecDeque<Entry<C>>,
    bulk: VecDeque<Entry<C>>,
    /// Batch slots owed to the bulk class, in quarters: while both classes wait, bulk earns a
    /// quarter of each batch, and a batch too small for a whole quarter pays it later.
    bulk_owed: usize,
}

impl<C> Default for Level<C> {
    fn default() -> Self {
        Self {
            small: VecDeque::new(),
            bulk: VecDeque::new(),
            bulk_owed: 0,
        }
    }
}

impl<C> Level<C> {
    fn is_empty(&self) -> bool {
        self.small.is_empty() && self.bulk.is_empty()
    }

    fn class(&mut self, small: bool) -> &mut VecDeque<Entry<C>> {
        if small {
            &mut self.small
        } else {
            &mut self.bulk
        }
    }
}

/// The result of taking a batch: what goes to the user function, and how many cancelled items
/// were discarded on the way.
#[derive(Debug)]
pub struct Taken<C> {
    pub entries: Vec<Entry<C>>,
    pub discarded: usize,
    /// The lengths of the discarded items, which leave the queue's token count too.
    discarded_tokens: usize,
}

#[derive(Debug)]
pub struct Pending<C> {
    levels: BTreeMap<i32, Level<C>>,
    len: usize,
    tokens: usize,
    small_call_threshold: usize,
}

/// Share of each batch kept for bulk items while small items are also waiting.
const BULK_SHARE_DIVISOR: usize = 4;
/// Length-aware packing chooses among this many times `batch_size` items next in line.
const PACKING_WINDOW_FACTOR: usize = 8;
/// How many times grouping by length may leave an item behind while taking a younger one;
/// after that it is overdue, and leads a batch as soon as no older item is overdue. Each pass
/// costs the item one more batch of waiting.
pub const MAX_PASSES: u32 = 8;

impl<C: Clone + Cancellable> Pending<C> {
    pub fn new(small_call_threshold: usize) -> Self {
        Self {
            levels: BTreeMap::new(),
            len: 0,
            tokens: 0,
            small_call_threshold,
        }
    }
}

impl<C> Pending<C> {
    /// Items queued, including cancelled ones not yet discarded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The sum of the queued items' lengths.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<C: Clone + Cancellable> Pending<C> {
    pub fn push(&mut self, submission: Submission<C>) {
        let small = submission.count <= self.small_call_threshold;
        let class = self
            .levels
            .entry(submission.priority)
            .or_default()
            .class(small);
        let length_of = |index: usize| submission.lengths.as_ref().map_or(1, |l| l[index]);
        let mut tokens = 0;
        class.extend((0..submission.count).map(|index| {
            let length = length_of(index);
            tokens += length;
            Entry {
                call: submission.call.clone(),
                index,
                arrival: submission.arrival,
                length,
                priority: submission.priority,
                small,
                passes: 0,
            }
        }));
        self.len += submission.count;
        self.tokens += tokens;
    }

    /// Arrival time of the oldest queued item, whatever its priority or class.
    pub fn oldest_arrival(&self) -> Option<Instant> {
        self.levels
            .values()
            .flat_map(|level| [level.small.front(), level.bulk.front()])
            .flatten()
            .map(|entry| entry.arrival)
            .min()
    }

    /// Removes the next batch: up to `max` live items in service order, or, with length-aware
    /// `packing`, the items chosen from a window of them, knowing what padding `cost`s if known.
    pub fn take(&mut self, max: usize, packing: &Packing, cost: Option<&PaddingCost>) -> Taken<C> {
        if !packing.is_length_aware() {
            return self.take_in_order(max);
        }
        let mut window = self.take_in_order(max.saturating_mul(PACKING_WINDOW_FACTOR));
        let chosen = choose_packed(&window.entries, max, packing, cost);
        let youngest_chosen = chosen.last().copied().unwrap_or(0);
        let mut entries = Vec::with_capacity(chosen.len());
        let mut rest = Vec::with_capacity(window.entries.len() - chosen.len());
        let mut chosen = chosen.into_iter().peekable();
        for (position, mut entry) in window.entries.drain(..).enumerate() {
            if chosen.next_if_eq(&position).is_some() {
                entries.push(entry);
            } else {
                if position < youngest_chosen {
                    entry.passes += 1;
                }
                rest.push(entry);
            }
        }
        self.put_back(rest);
        Taken {
            entries,
            discarded: window.discarded,
            discarded_tokens: window.discarded_tokens,
        }
    }

    fn take_in_order(&mut self, max: usize) -> Taken<C> {
        let mut taken = Taken {
            entries: Vec::with_capacity(max.min(self.len)),
            discarded: 0,
            discarded_tokens: 0,
        };
        for level in self.levels.values_mut() {
            let room = max - taken.entries.len();
            if room == 0 {
                break;
            }
            let bulk_reserve = if level.small.is_empty() || level.bulk.is_empty() {
                level.bulk_owed = 0;
                0
            } else {
                level.bulk_owed += room;
                let reserve = (level.bulk_owed / BULK_SHARE_DIVISOR).min(level.bulk.len());
                level.bulk_owed -= reserve * BULK_SHARE_DIVISOR;
                reserve
            };
            move_live(&mut level.small, room - bulk_reserve, &mut taken);
            move_live(&mut level.bulk, max - taken.entries.len(), &mut taken);
            // The bulk class may have had fewer live items than reserved.
            move_live(&mut level.small, max - taken.entries.len(), &mut taken);
        }
        self.levels.retain(|_, level| !level.is_empty());
        self.len -= taken.entries.len() + taken.discarded;
        self.tokens -=
            taken.entries.iter().map(|e| e.length).sum::<usize>() + taken.discarded_tokens;
        taken
    }

    /// Returns items taken but not chosen to the front of their queues, in their old order.
    fn put_back(&mut self, entries: Vec<Entry<C>>) {
        for entry in entries.into_iter().rev() {
            self.len += 1;
            self.tokens += entry.length;
            self.levels
                .entry(entry.priority)
                .or_default()
                .class(entry.small)
                .push_front(entry);
        }
    }

    /// Empties the queue, returning every item (live or not) so its caller can be told.
    pub fn drain(&mut self) -> Vec<Entry<C>> {
        let levels = std::mem::take(&mut self.levels);
        self.len = 0;
        self.tokens = 0;
        levels
            .into_values()
            .flat_map(|level| level.small.into_iter().chain(level.bulk))
            .collect()
    }
}

fn move_live<C: Cancellable>(from: &mut VecDeque<Entry<C>>, count: usize, into: &mut Taken<C>) {
    let mut moved = 0;
    while moved < count {
        let Some(entry) = from.pop_front() else { break };
        if entry.call.is_cancelled() {
            into.discarded += 1;
            into.discarded_tokens += entry.length;
        } else {
            into.entries.push(entry);
            moved += 1;
        }
    }
}

/// Padded positions of a batch: its size times its longest item.
fn padded_cost(count: usize, longest: usize) -> usize {
    count.saturating_mul(longest)
}

/// Picks positions (ascending) in `window`, which is in service order, for the next batch.
///
/// Without sorting, the batch is the longest prefix within `max` items and the token budget:
/// the first item always goes, as it is the one the deadline is about. With sorting, the batch
/// forms around a leader: the oldest item passed over [`MAX_PASSES`] times, or else the first.
/// It grows through the items nearest in length to the leader, taking the nearer neighbour
/// first, while it stays within `max` items and the budget. With a known padding `cost`, it is
/// then cut back to the size that costs each of its items least.
pub fn choose_packed<C>(
    window: &[Entry<C>],
    max: usize,
    packing: &Packing,
    cost: Option<&PaddingCost>,
) -> Vec<usize> {
    if window.is_empty() || max == 0 {
        return Vec::new();
    }
    let budget = packing.max_batch_tokens.unwrap_or(usize::MAX);
    let fits = |count: usize, longest: usize| count <= max && padded_cost(count, longest) <= budget;
    if !packing.sort_by_length {
        let mut longest = 0;
        let mut chosen = Vec::new();
        for (position, entry) in window.iter().enumerate() {
            let candidate = longest.max(entry.length);
            // The first item goes even when it alone is over budget (it was checked on submit).
            if !chosen.is_empty() && !fits(chosen.len() + 1, candidate) {
                break;
            }
            longest = candidate;
            chosen.push(position);
        }
        return chosen;
    }
    // The batch forms around the oldest overdue item, or else the first one. Overdue items
    // each lead a batch of their own length in turn, so a backlog of them still sorts.
    let first = window
        .iter()
        .position(|entry| entry.passes >= MAX_PASSES)
        .unwrap_or(0);
    let mut taken = vec![false; window.len()];
    taken[first] = true;
    let mut count = 1;
    let mut longest = window[first].length;
    // Positions in the order they joined, with the batch's longest length after each.
    let mut growth = vec![(first, longest)];
    let mut by_length: Vec<usize> = (0..window.len()).collect();
    // Stable: equal lengths keep service order, so older items go first.
    by_length.sort_by_key(|&position| window[position].length);
    let anchor = by_length
        .iter()
        .position(|&position| position == first)
        .expect("every position is in the window");
    let anchor_length = window[first].length;
    // The nearest items not yet taken below and above the anchor in `by_length`.
    let untaken_below = |end: usize, taken: &[bool]| (0..end).rev().find(|&i| !taken[by_length[i]]);
    let untaken_above =
        |start: usize, taken: &[bool]| (start..by_length.len()).find(|&i| !taken[by_length[i]]);
    let mut below = untaken_below(anchor, &taken);
    let mut above = untaken_above(anchor + 1, &taken);
    loop {
        let low = below.map(|i| (i, window[by_length[i]].length));
        let high = above.map(|i| (i, window[by_length[i]].length));
        // Shorter items add no padding; prefer whichever neighbour is nearer in length, and
        // fall back to the other one when the nearer does not fit.
        let options = match (low, high) {
            (Some(b), Some(a)) if anchor_length - b.1 <= a.1 - anchor_length => [Some(b), Some(a)],
            (b, a) => [a, b],
        };
        let Some(((next, _), candidate)) = options
            .into_iter()
            .flatten()
            .map(|option| (option, longest.max(option.1)))
            .find(|&(_, candidate)| fits(count + 1, candidate))
        else {
            break;
        };
        taken[by_length[next]] = true;
        count += 1;
        longest = candidate;
        growth.push((by_length[next], longest));
        if Some(next) == below {
            below = untaken_below(next, &taken);
        } else {
            above = untaken_above(next + 1, &taken);
        }
    }
    if let Some(cost) = cost {
        let keep = cost.best_count(growth.iter().map(|&(_, longest)| longest));
        for &(position, _) in &growth[keep..] {
            taken[position] = false;
        }
    }
    (0..window.len())
        .filter(|&position| taken[position])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct FakeCall {
        id: usize,
        cancelled: AtomicBool,
    }

    type CallRef = Arc<FakeCall>;

    impl Cancellable for CallRef {
        fn is_cancelled(&self) -> bool {
            self.cancelled.load(Ordering::Relaxed)
        }
    }

    fn call(id: usize) -> CallRef {
        Arc::new(FakeCall {
            id,
            cancelled: AtomicBool::new(false),
        })
    }

    fn submit(pending: &mut Pending<CallRef>, call: &CallRef, count: usize, priority: i32) {
        pending.push(Submission {
            call: call.clone(),
            count,
            priority,
            arrival: Instant::now(),
            lengths: None,
        });
    }

    fn submit_lengths(pending: &mut Pending<CallRef>, call: &CallRef, lengths: &[usize]) {
        pending.push(Submission {
            call: call.clone(),
            count: lengths.len(),
            priority: 0,
            arrival: Instant::now(),
            lengths: Some(lengths.to_vec()),
        });
    }

    const IN_ORDER: Packing = Packing {
        max_batch_tokens: None,
        sort_by_length: false,
    };

    fn ids(taken: &Taken<CallRef>) -> Vec<(usize, usize)> {
        taken.entries.iter().map(|e| (e.call.id, e.index)).collect()
    }

    #[test]
    fn one_call_comes_out_in_input_order_split_by_batch_size() {
        let mut pending = Pending::new(8);
        submit(&mut pending, &call(1), 10, 0);
        assert_eq!(pending.len(), 10);
        let first = pending.take(4, &IN_ORDER, None);
        assert_eq!(ids(&first), vec![(1, 0), (1, 1), (1, 2), (1, 3)]);
        let second = pending.take(4, &IN_ORDER, None);
        assert_eq!(ids(&second), vec![(1, 4), (1, 5), (1, 6), (1, 7)]);
        let third = pending.take(4, &IN_ORDER, None);
        assert_eq!(ids(&third), vec![(1, 8), (1, 9)]);
        assert!(pending.is_empty());
        assert!(pending.oldest_arrival().is_none());
    }

    #[test]
    fn small_calls_go_before_an_earlier_bulk_call_but_bulk_keeps_a_share() {
        let mut pending = Pending::new(2);
        submit(&mut pending, &call(1), 100, 0);
        for id in 2..12 {
            submit(&mut pending, &call(id), 1, 0);
        }
        let batch = pending.take(8, &IN_ORDER, None);
        // 8 / 4 = 2 slots for bulk, the other 6 for the small calls in arrival order.
        assert_eq!(
            ids(&batch),
            vec![
                (2, 0),
                (3, 0),
                (4, 0),
                (5, 0),
                (6, 0),
                (7, 0),
                (1, 0),
                (1, 1)
            ]
        );
    }

    #[test]
    fn batches_too_small_for_a_quarter_pay_bulk_every_fourth_batch() {
        let mut pending = Pending::new(1);
        submit(&mut pending, &call(1), 6, 0);
        for id in 2..8 {
            submit(&mut pending, &call(id), 1, 0);
        }
        let order: Vec<(usize, usize)> = (0..8)
            .flat_map(|_| ids(&pending.take(1, &IN_ORDER, None)))
            .collect();
        assert_eq!(
            order,
            vec![
                (2, 0),
                (3, 0),
                (4, 0),
                (1, 0),
                (5, 0),
                (6, 0),
                (7, 0),
                (1, 1)
            ]
        );
    }

    #[test]
    fn bulk_fills_the_batch_when_few_small_items_wait() {
        let mut pending = Pending::new(2);
        submit(&mut pending, &call(1), 100, 0);
        submit(&mut pending, &call(2), 1, 0);
        let batch = pending.take(4, &IN_ORDER, None);
        assert_eq!(ids(&batch), vec![(2, 0), (1, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn lower_priority_numbers_run_first() {
        let mut pending = Pending::new(8);
        submit(&mut pending, &call(1), 2, 5);
        submit(&mut pending, &call(2), 2, -1);
        submit(&mut pending, &call(3), 2, 0);
        let batch = pending.take(5, &IN_ORDER, None);
        assert_eq!(ids(&batch), vec![(2, 0), (2, 1), (3, 0), (3, 1), (1, 0)]);
    }

    #[test]
    fn cancelled_items_are_discarded_not_dispatched() {
        let mut pending = Pending::new(8);
        let gone = call(1);
        submit(&mut pending, &gone, 3, 0);
        submit(&mut pending, &call(2), 2, 0);
        gone.cancelled.store(true, Ordering::Relaxed);
        let batch = pending.take(4, &IN_ORDER, None);
        assert_eq!(ids(&batch), vec![(2, 0), (2, 1)]);
        assert_eq!(batch.discarded, 3);
        assert!(pending.is_empty());
    }

    #[test]
    fn discarded_items_leave_the_token_count() {
        let mut pending = Pending::new(8);
        let gone = call(1);
        submit_lengths(&mut pending, &gone, &[90]);
        submit_lengths(&mut pending, &call(2), &[20, 30]);
        gone.cancelled.store(true, Ordering::Relaxed);
        let sorted = Packing {
            max_batch_tokens: Some(100),
            sort_by_length: true,
        };
        let batch = pending.take(1, &sorted, None);
        assert_eq!((batch.entries.len(), batch.discarded), (1, 1));
        // Only the live item still queued counts: a stale count would make a budget look full.
        assert_eq!(pending.tokens(), 30);
        let batch = pending.take(1, &IN_ORDER, None);
        assert_eq!(ids(&batch), vec![(2, 1)]);
        assert_eq!(pending.tokens(), 0);
    }

    #[test]
    fn oldest_arrival_looks_across_priorities_and_classes() {
        let mut pending = Pending::new(1);
        let early = Instant::now();
        pending.push(Submission {
            call: call(1),
            count: 5,
            priority: 9,
            arrival: early,
            lengths: None,
        });
        submit(&mut pending, &call(2), 1, 0);
        assert_eq!(pending.oldest_arrival(), Some(early));
    }

    #[test]
    fn drain_returns_everything() {
        let mut pending = Pending::new(1);
        submit(&mut pending, &call(1), 5, 9);
        submit(&mut pending, &call(2), 1, 0);
        assert_eq!(pending.drain().len(), 6);
        assert!(pending.is_empty());
    }

    fn lengths(taken: &Taken<CallRef>) -> Vec<usize> {
        taken.entries.iter().map(|e| e.length).collect()
    }

    #[test]
    fn token_budget_cuts_the_batch_in_service_order() {
        let mut pending = Pending::new(0);
        submit_lengths(&mut pending, &call(1), &[10, 30, 20, 40]);
        assert_eq!(pending.tokens(), 100);
        let budget = Packing {
            max_batch_tokens: Some(90),
            sort_by_length: false,
        };
        // 3 items up to length 30 cost 90 positions; a fourth of length 40 would cost 160.
        let batch = pending.take(8, &budget, None);
        assert_eq!(lengths(&batch), vec![10, 30, 20]);
        assert_eq!(pending.tokens(), 40);
        assert_eq!(lengths(&pending.take(8, &budget, None)), vec![40]);
    }

    #[test]
    fn sorting_groups_similar_lengths_around_the_first_item() {
        let mut pending = Pending::new(0);
        submit_lengths(&mut pending, &call(1), &[100, 8, 500, 96, 9, 104, 480, 7]);
        let sorted = Packing {
            max_batch_tokens: None,
            sort_by_length: true,
        };
        let first = pending.take(3, &sorted, None);
        assert_eq!(lengths(&first), vec![100, 96, 104]);
        // Items not chosen keep their order for the next batch.
        let second = pending.take(3, &sorted, None);
        assert_eq!(lengths(&second), vec![8, 9, 7]);
        let third = pending.take(3, &sorted, None);
        assert_eq!(lengths(&third), vec![500, 480]);
        assert!(pending.is_empty());
        assert_eq!(pending.tokens(), 0);
    }

    #[test]
    fn sorting_respects_the_budget_and_prefers_shorter_neighbours() {
        let window = window_of(&[(50, 0), (60, 0), (40, 0), (45, 0)]);
        let packing = Packing {
            max_batch_tokens: Some(150),
            sort_by_length: true,
        };
        // 50 with 45 and 40 costs 3 * 50 = 150; adding 60 would cost 240.
        assert_eq!(choose_packed(&window, 8, &packing, None), vec![0, 2, 3]);
    }

    fn window_of(lengths_and_passes: &[(usize, u32)]) -> Vec<Entry<CallRef>> {
        lengths_and_passes
            .iter()
            .enumerate()
            .map(|(index, &(length, passes))| Entry {
                call: call(0),
                index,
                arrival: Instant::now(),
                length,
                priority: 0,
                small: false,
                passes,
            })
            .collect()
    }

    #[test]
    fn the_oldest_item_passed_over_max_passes_times_leads_the_batch() {
        let sorted = Packing {
            max_batch_tokens: None,
            sort_by_length: true,
        };
        // The 500 leads, with its nearest lengths; the overdue 2 leads the next batch.
        let window = window_of(&[
            (50, 0),
            (500, MAX_PASSES),
            (51, 0),
            (2, MAX_PASSES),
            (49, 0),
        ]);
        assert_eq!(choose_packed(&window, 4, &sorted, None), vec![0, 1, 2, 4]);
        let window = window_of(&[(50, 0), (2, MAX_PASSES), (49, 0)]);
        assert_eq!(choose_packed(&window, 2, &sorted, None), vec![1, 2]);
        // One pass fewer, and the long and short items lose to the mid-length ones again.
        let window = window_of(&[(50, 0), (500, 1), (51, 0), (2, 1), (49, 0)]);
        assert_eq!(choose_packed(&window, 3, &sorted, None), vec![0, 2, 4]);
    }

    #[test]
    fn an_overdue_item_leads_even_a_batch_the_budget_leaves_it_alone_in() {
        let budget = Packing {
            max_batch_tokens: Some(1000),
            sort_by_length: true,
        };
        let window = window_of(&[(50, 0), (900, MAX_PASSES), (50, 0)]);
        assert_eq!(choose_packed(&window, 8, &budget, None), vec![1]);
    }

    #[test]
    fn a_known_padding_cost_stops_a_sorted_batch_where_each_item_would_cost_more() {
        let sorted = Packing {
            max_batch_tokens: None,
            sort_by_length: true,
        };
        // 12 ms a batch and 0.2 ms a padded position: sending the four items of about 10 alone
        // saves them 4 x 49 padded positions (39 ms), more than the second batch costs.
        let cost = PaddingCost {
            per_batch: 0.012,
            per_position: 0.0002,
        };
        let window = window_of(&[
            (10, 0),
            (60, 0),
            (9, 0),
            (58, 0),
            (11, 0),
            (59, 0),
            (10, 0),
            (60, 0),
        ]);
        assert_eq!(choose_packed(&window, 8, &sorted, None).len(), 8);
        assert_eq!(
            choose_packed(&window, 8, &sorted, Some(&cost)),
            vec![0, 2, 4, 6]
        );
        // A long first item keeps the whole batch: the short ones add no padding.
        let window = window_of(&[(60, 0), (10, 0), (58, 0), (9, 0)]);
        assert_eq!(
            choose_packed(&window, 8, &sorted, Some(&cost)),
            vec![0, 1, 2, 3]
        );
        // Items passed over too often go whatever they cost.
        let window = window_of(&[(10, 0), (60, MAX_PASSES), (9, 0), (11, 0)]);
        assert_eq!(
            choose_packed(&window, 8, &sorted, Some(&cost)),
            vec![0, 1, 2, 3]
        );
    }

    /// Items still queued that arrived before item `id` of `call`.
    fn queued_before(pending: &Pending<CallRef>, call: usize, index: usize) -> usize {
        pending
            .levels
            .values()
            .flat_map(|level| level.small.iter().chain(&level.bulk))
            .filter(|e| (e.call.id, e.index) < (call, index))
            .count()
    }

    #[test]
    fn an_odd_item_is_passed_over_max_passes_times_and_then_once_per_older_item() {
        let mut pending = Pending::new(0);
        let sorted = Packing {
            max_batch_tokens: None,
            sort_by_length: true,
        };
        // Items of spread-out lengths wait ahead of the long one; each batch's first item finds
        // two younger items of its own length in the stream, nearer than any older item.
        let ahead: Vec<usize> = (1..=MAX_PASSES as usize + 4).map(|i| 10 * i).collect();
        submit_lengths(&mut pending, &call(0), &ahead);
        submit_lengths(&mut pending, &call(1), &[5000]);
        let (mut passes, mut taken, mut older_when_overdue) = (0, false, None);
        for _ in 0..4 * ahead.len() {
            let head = pending.levels.values().next().unwrap().bulk[0].length;
            submit_lengths(&mut pending, &call(2), &[head, head]);
            let batch = pending.take(3, &sorted, None);
            taken = batch.entries.iter().any(|e| e.call.id == 1);
            if taken {
                break;
            }
            if batch.entries.iter().any(|e| e.call.id == 2) {
                passes += 1;
                if passes == MAX_PASSES {
                    older_when_overdue = Some(queued_before(&pending, 1, 0));
                }
            }
        }
        assert!(taken);
        // The items ahead were passed over as often, and each of them leads a batch first.
        assert_eq!(older_when_overdue, Some(4));
        assert_eq!(passes, MAX_PASSES + 4);
    }

    /// Pushes `count` one-item calls of length `length`, numbered from `*next_id` in arrival
    /// order.
    fn stream(pending: &mut Pending<CallRef>, next_id: &mut usize, lengths: &[usize]) {
        for &length in lengths {
            submit_lengths(pending, &call(*next_id), &[length]);
            *next_id += 1;
        }
    }

    /// No cost known, or one from a cheap fixed cost with dear padding to the reverse.
    fn padding_cost() -> impl Strategy<Value = Option<PaddingCost>> {
        prop::option::of(
            (1e-4f64..0.05, 1e-6f64..1e-3).prop_map(|(per_batch, per_position)| PaddingCost {
                per_batch,
                per_position,
            }),
        )
    }

    proptest! {
        /// Under a steady stream of mid-length items, the longest and the shortest item each lose
        /// the pick (a batch takes a younger item and not them) at most `MAX_PASSES` times, and
        /// then at most once for each older item still queued, with or without a token budget
        /// that has room for them, and whatever padding costs.
        #[test]
        fn the_longest_and_shortest_items_are_not_passed_over_indefinitely(
            batch_size in 3usize..16,
            arrivals in prop::collection::vec(prop::collection::vec(30usize..70, 0..40), 1..60),
            outliers_at in 0usize..60,
            budget in prop::option::of(1000usize..4000),
            cost in padding_cost(),
        ) {
            const LONGEST: usize = 300;
            const SHORTEST: usize = 1;
            let packing = Packing { max_batch_tokens: budget, sort_by_length: true };
            let mut pending = Pending::new(0);
            let mut next_id = 0;
            // (id, times passed over, taken yet, older items queued when it became overdue)
            let mut outliers: Vec<(usize, u32, bool, usize)> = Vec::new();
            let mut step = 0;
            while step < arrivals.len() || !pending.is_empty() {
                if let Some(lengths) = arrivals.get(step) {
                    stream(&mut pending, &mut next_id, lengths);
                }
                if step == outliers_at.min(arrivals.len() - 1) {
                    for length in [LONGEST, SHORTEST] {
                        outliers.push((next_id, 0, false, 0));
                        stream(&mut pending, &mut next_id, &[length]);
                    }
                }
                step += 1;
                let batch = pending.take(batch_size, &packing, cost.as_ref());
                let youngest = batch.entries.iter().map(|e| e.call.id).max();
                for (id, passes, taken, older) in &mut outliers {
                    if *taken {
                        continue;
                    }
                    *taken = batch.entries.iter().any(|e| e.call.id == *id);
                    if !*taken && youngest.is_some_and(|youngest| youngest > *id) {
                        *passes += 1;
                        if *passes == MAX_PASSES {
                            *older = queued_before(&pending, *id, 0);
                        }
                    }
                }
            }
            for (id, passes, taken, older) in outliers {
                prop_assert!(taken);
                prop_assert!(
                    passes <= MAX_PASSES + older as u32,
                    "item {} passed over {} times, {} older items queued when overdue",
                    id, passes, older
                );
            }
        }
    }

    proptest! {
        /// Length-aware packing still hands out every live item exactly once, always includes
        /// the oldest overdue item in the window or else the item first in line, and keeps every
        /// batch within its size and token budget (unless a single item alone exceeds it),
        /// whatever padding costs.
        #[test]
        fn packing_loses_nothing_and_keeps_the_budget(
            item_lengths in prop::collection::vec(1usize..64, 1..120),
            batch_size in 1usize..12,
            budget in prop::option::of(64usize..400),
            sort_by_length in any::<bool>(),
            cost in padding_cost(),
        ) {
            let packing = Packing { max_batch_tokens: budget, sort_by_length };
            let mut pending = Pending::new(0);
            submit_lengths(&mut pending, &call(0), &item_lengths);
            let mut seen = vec![false; item_lengths.len()];
            while !pending.is_empty() {
                let line = &pending.levels.values().next().unwrap().bulk;
                let window = line.iter().take(batch_size * PACKING_WINDOW_FACTOR);
                let leader = window
                    .clone()
                    .find(|e| e.passes >= MAX_PASSES)
                    .unwrap_or(&line[0])
                    .index;
                let batch = pending.take(batch_size, &packing, cost.as_ref());
                prop_assert!(!batch.entries.is_empty());
                prop_assert!(batch.entries.len() <= batch_size);
                prop_assert!(batch.entries.iter().any(|e| e.index == leader));
                let longest = batch.entries.iter().map(|e| e.length).max().unwrap();
                if let (Some(budget), true) = (budget, batch.entries.len() > 1) {
                    prop_assert!(batch.entries.len() * longest <= budget);
                }
                for entry in &batch.entries {
                    prop_assert!(!seen[entry.index]);
                    seen[entry.index] = true;
                }
            }
            prop_assert!(seen.iter().all(|&s| s));
            prop_assert_eq!(pending.tokens(), 0);
        }
    }

    proptest! {
        /// Whatever the calls, every live item comes out exactly once, no batch is over size,
        /// each call's items keep their order, and a higher priority never follows a lower one
        /// inside a batch.
        #[test]
        fn every_item_comes_out_once_in_call_order(
            calls in prop::collection::vec((1usize..40, -2i32..3, any::<bool>()), 1..30),
            batch_size in 1usize..20,
            threshold in 0usize..10,
        ) {
            let mut pending = Pending::new(threshold);
            let mut expected = 0;
            let refs: Vec<CallRef> = (0..calls.len()).map(call).collect();
            for (call_ref, &(count, priority, cancelled)) in refs.iter().zip(&calls) {
                submit(&mut pending, call_ref, count, priority);
                if cancelled {
                    call_ref.cancelled.store(true, Ordering::Relaxed);
                } else {
                    expected += count;
                }
            }
            let mut next_index = vec![0usize; calls.len()];
            let mut seen = 0;
            while !pending.is_empty() {
                let batch = pending.take(batch_size, &IN_ORDER, None);
                prop_assert!(batch.entries.len() <= batch_size);
                prop_assert!(!batch.entries.is_empty() || batch.discarded > 0);
                let priorities: Vec<i32> =
                    batch.entries.iter().map(|e| calls[e.call.id].1).collect();
                prop_assert!(priorities.windows(2).all(|w| w[0] <= w[1]));
                for entry in &batch.entries {
                    prop_assert!(!calls[entry.call.id].2);
                    prop_assert_eq!(entry.index, next_index[entry.call.id]);
                    next_index[entry.call.id] += 1;
                }
                seen += batch.entries.len();
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
