#include "pth_pickle.h"

#include <cstring>
#include <map>
#include <memory>

namespace liveavatar::io::internal {

namespace {

struct StorageClass {
  const char* name;
  DType dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", DType::kF32},  {"HalfStorage", DType::kF16},  {"BFloat16Storage", DType::kBF16},
    {"DoubleStorage", DType::kF64}, {"LongStorage", DType::kI64},  {"IntStorage", DType::kI32},
    {"ShortStorage", DType::kI16},  {"CharStorage", DType::kI8},   {"ByteStorage", DType::kU8},
    {"BoolStorage", DType::kBool},  {"Float8_e4m3fnStorage", DType::kF8_E4M3},
    {"Float8_e5m2Storage", DType::kF8_E5M2},
};

// Values the unpickler can build. Objects live in an arena owned by the parser (memo entries and containers
// may form cycles; nothing is reference-counted).
struct Obj {
  enum class Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;   // str / bytes / global module / storage key
  std::string s2;  // global attribute
  DType dtype = DType::kF32;  // storage class / storage
  std::vector<Obj*> items;    // tuple / list
  std::vector<std::pair<Obj*, Obj*>> dict;
  PickledTensor tensor;
};

const char* KindName(Obj::Kind k) {
  switch (k) {
    case Obj::Kind::kNone: return "None";
    case Obj::Kind::kBool: return "bool";
    case Obj::Kind::kInt: return "int";
    case Obj::Kind::kFloat: return "float";
    case Obj::Kind::kStr: return "str";
    case Obj::Kind::kBytes: return "bytes";
    case Obj::Kind::kTuple: return "tuple";
    case Obj::Kind::kList: return "list";
    case Obj::Kind::kDict: return "dict";
    case Obj::Kind::kGlobal: return "global";
    case Obj::Kind::kStorage: return "storage";
    case Obj::Kind::kTensor: return "tensor";
  }
  return "?";
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& origin) : p_(data), n_(size), origin_(origin) {}

  StatusOr<Obj*> Run();

 private:
  Status Err(const std::string& what) const {
    return Status::Corruption(origin_ + ": data.pkl offset " + std::to_string(op_pos_) + ": " + what);
  }
  Obj* New(Obj::Kind k) {
    arena_.push_back(std::make_unique<Obj>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }
  bool Need(size_t k) const { return k <= n_ - pos_; }
  // Work budget: every element an operation copies is charged. Memo references share objects, but a call such as
  // OrderedDict(list) copies its argument, and a small pickle can reuse one memoised list in many calls; the
  // budget keeps the total work linear in the pickle's size.
  Status Charge(size_t units) {
    if (units > budget_) {
      return Err("pickle does more work than its size allows (a memoised object reused " +
                 std::string("over and over?); refusing a likely decompression bomb"));
    }
    budget_ -= units;
    return Status::Ok();
  }
  uint64_t ReadLe(size_t k) {
    uint64_t v = 0;
    for (size_t b = 0; b < k; ++b) v |= static_cast<uint64_t>(p_[pos_ + b]) << (8 * b);
    pos_ += k;
    return v;
  }
  StatusOr<std::string> ReadLine();
  StatusOr<Obj*> Pop();
  StatusOr<std::vector<Obj*>> PopMark();
  Status PushGlobal(const std::string& module, const std::string& name);
  Status Reduce(Obj* callable, Obj* args);
  StatusOr<Obj*> MakeStorage(Obj* pid);
  StatusOr<Obj*> MakeTensor(const std::vector<Obj*>& args, size_t min_args, size_t max_args, const char* fn);

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  const std::string& origin_;
  std::vector<std::unique_ptr<Obj>> arena_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Obj*> memo_;
  size_t budget_ = 16 * n_ + (size_t{1} << 20);
};

StatusOr<std::string> Unpickler::ReadLine() {
  const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
  if (nl == nullptr) return Err("unterminated text argument");
  const size_t len = static_cast<const uint8_t*>(nl) - (p_ + pos_);
  std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
  pos_ += len + 1;
  return s;
}

StatusOr<Obj*> Unpickler::Pop() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Err("stack underflow");
  Obj* o = stack_.back();
  stack_.pop_back();
  return o;
}

StatusOr<std::vector<Obj*>> Unpickler::PopMark() {
  if (marks_.empty()) return Err("no MARK on the stack");
  const size_t m = marks_.back();
  marks_.pop_back();
  std::vector<Obj*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
  stack_.resize(m);
  return items;
}

Status Unpickler::PushGlobal(const std::string& module, const std::string& name) {
  bool ok = false;
  if (module == "collections" && name == "OrderedDict") ok = true;
  if (module == "torch._utils" &&
      (name == "_rebuild_tensor_v2" || name == "_rebuild_tensor" || name == "_rebuild_parameter" ||
       name == "_rebuild_parameter_with_state")) {
    ok = true;
  }
  DType dtype = DType::kF32;
  if (module == "torch") {
    for (const auto& c : kStorageClasses) {
      if (name == c.name) {
        ok = true;
        dtype = c.dtype;
      }
    }
  }
  if (!ok) {
    std::string shown = module + "." + name;
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
    }
    return Status::NotSupported(origin_ + ": data.pkl offset " + std::to_string(op_pos_) + ": refusing global '" +
                                shown +
                                "': only state-dict contents (OrderedDict, torch._utils._rebuild_tensor_v2, "
                                "torch.*Storage) may be loaded; nothing is executed");
  }
  Obj* g = New(Obj::Kind::kGlobal);
  g->s = module;
  g->s2 = name;
  g->dtype = dtype;
  stack_.push_back(g);
  return Status::Ok();
}

StatusOr<Obj*> Unpickler::MakeStorage(Obj* pid) {
  // ('storage', torch.<T>Storage, key, location, numel)
  if (pid->kind != Obj::Kind::kTuple || pid->items.size() != 5 || pid->items[0]->kind != Obj::Kind::kStr ||
      pid->items[0]->s != "storage") {
    return Err("persistent id is not a ('storage', type, key, location, numel) tuple");
  }
  Obj* type = pid->items[1];
  if (type->kind != Obj::Kind::kGlobal || type->s != "torch" || type->s2.size() < 7 ||
      type->s2.compare(type->s2.size() - 7, 7, "Storage") != 0) {
    return Err("persistent id storage type is not a torch.*Storage class");
  }
  if (pid->items[2]->kind != Obj::Kind::kStr) return Err("persistent id storage key is not a string");
  if (pid->items[4]->kind != Obj::Kind::kInt || pid->items[4]->i < 0) {
    return Err("persistent id storage size is not a non-negative int");
  }
  Obj* s = New(Obj::Kind::kStorage);
  s->dtype = type->dtype;
  s->s = pid->items[2]->s;
  s->i = pid->items[4]->i;
  return s;
}

StatusOr<Obj*> Unpickler::MakeTensor(const std::vector<Obj*>& a, size_t min_args, size_t max_args, const char* fn) {
  const std::string where = std::string("torch._utils.") + fn;
  if (a.size() < min_args || a.size() > max_args) return Err(where + ": wrong number of arguments");
  if (a[0]->kind != Obj::Kind::kStorage) return Err(where + ": first argument is not a storage");
  if (a[1]->kind != Obj::Kind::kInt || a[1]->i < 0) return Err(where + ": storage offset is not a non-negative int");
  for (int k = 2; k <= 3; ++k) {
    if (a[k]->kind != Obj::Kind::kTuple) return Err(where + ": size/stride is not a tuple");
    for (Obj* d : a[k]->items) {
      if (d->kind != Obj::Kind::kInt || d->i < 0) return Err(where + ": size/stride holds a non-int or negative value");
    }
  }
  if (a[2]->items.size() != a[3]->items.size()) return Err(where + ": size and stride differ in length");
  if (a[2]->items.size() > 64) return Err(where + ": " + std::to_string(a[2]->items.size()) + " dimensions (at most 64)");
  LA_RETURN_IF_ERROR(Charge(a[2]->items.size()));
  Obj* t = New(Obj::Kind::kTensor);
  PickledTensor& d = t->tensor;
  d.storage_key = a[0]->s;
  d.dtype = a[0]->dtype;
  d.storage_numel = static_cast<uint64_t>(a[0]->i);
  d.storage_offset = a[1]->i;
  // Highest element index touched: offset + sum((size - 1) * stride), overflow-checked.
  bool empty = false;
  uint64_t last = static_cast<uint64_t>(d.storage_offset);
  for (size_t k = 0; k < a[2]->items.size(); ++k) {
    const int64_t sz = a[2]->items[k]->i, st = a[3]->items[k]->i;
    d.size.push_back(sz);
    d.stride.push_back(st);
    if (sz == 0) empty = true;
    uint64_t span = 0;
    if (sz > 0 && (__builtin_mul_overflow(static_cast<uint64_t>(sz - 1), static_cast<uint64_t>(st), &span) ||
                   __builtin_add_overflow(last, span, &last))) {
      return Err(where + ": tensor view overflows");
    }
  }
  // A view with more elements than its storage overlaps itself (a stride-0 broadcast, say): a 651-byte file could
  // describe a GiB-sized tensor. Checkpoints never hold one; refuse it.
  uint64_t numel = 1;
  for (int64_t sz : d.size) {
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(sz), &numel)) return Err(where + ": tensor size overflows");
  }
  if (!empty && numel > d.storage_numel) {
    return Err(where + ": tensor view of " + std::to_string(numel) + " elements over storage '" + d.storage_key +
               "' of " + std::to_string(d.storage_numel) +
               " elements (an overlapping or stride-0 view; not a checkpoint tensor)");
  }
  if (!empty && last >= d.storage_numel) {
    return Err(where + ": tensor view (offset " + std::to_string(d.storage_offset) + ", last element " +
               std::to_string(last) + ") exceeds its storage '" + d.storage_key + "' of " +
               std::to_string(d.storage_numel) + " elements");
  }
  return t;
}

Status Unpickler::Reduce(Obj* callable, Obj* args) {
  if (callable->kind != Obj::Kind::kGlobal) return Err(std::string("REDUCE on a ") + KindName(callable->kind));
  if (args->kind != Obj::Kind::kTuple) return Err("REDUCE arguments are not a tuple");
  const std::string& m = callable->s;
  const std::string& f = callable->s2;
  const auto& a = args->items;
  if (m == "collections" && f == "OrderedDict") {
    Obj* d = New(Obj::Kind::kDict);
    if (a.size() == 1 && (a[0]->kind == Obj::Kind::kList || a[0]->kind == Obj::Kind::kTuple)) {
      LA_RETURN_IF_ERROR(Charge(a[0]->items.size()));
      for (Obj* kv : a[0]->items) {
        if ((kv->kind != Obj::Kind::kTuple && kv->kind != Obj::Kind::kList) || kv->items.size() != 2) {
          return Err("OrderedDict() argument is not a sequence of pairs");
        }
        d->dict.emplace_back(kv->items[0], kv->items[1]);
      }
    } else if (!a.empty()) {
      return Err("OrderedDict() called with unsupported arguments");
    }
    stack_.push_back(d);
    return Status::Ok();
  }
  if (m == "torch._utils" && f == "_rebuild_tensor_v2") {
    LA_ASSIGN_OR_RETURN(Obj * t, MakeTensor(a, 6, 7, "_rebuild_tensor_v2"));
    stack_.push_back(t);
    return Status::Ok();
  }
  if (m == "torch._utils" && f == "_rebuild_tensor") {
    LA_ASSIGN_OR_RETURN(Obj * t, MakeTensor(a, 4, 4, "_rebuild_tensor"));
    stack_.push_back(t);
    return Status::Ok();
  }
  if (m == "torch._utils" && (f == "_rebuild_parameter" || f == "_rebuild_parameter_with_state")) {
    if (a.size() < 1 || a[0]->kind != Obj::Kind::kTensor) return Err("_rebuild_parameter: first argument is not a tensor");
    stack_.push_back(a[0]);
    return Status::Ok();
  }
  return Err("global '" + m + "." + f + "' cannot be called");
}

StatusOr<Obj*> Unpickler::Run() {
  while (true) {
    if (pos_ >= n_) return Err("pickle ends without STOP (truncated?)");
    op_pos_ = pos_;
    const uint8_t op = p_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        if (!Need(1)) return Err("truncated PROTO");
        const uint8_t v = p_[pos_++];
        if (v > 5) return Err("unsupported pickle protocol " + std::to_string(v));
        break;
      }
      case 0x95:  // FRAME (protocol 4): framing is transparent
        if (!Need(8)) return Err("truncated FRAME");
        pos_ += 8;
        break;
      case '.': {  // STOP
        LA_ASSIGN_OR_RETURN(Obj * o, Pop());
        return o;
      }
      case '(':
        marks_.push_back(stack_.size());
        break;
      case 'N':
        stack_.push_back(New(Obj::Kind::kNone));
        break;
      case 0x88:
      case 0x89: {
        Obj* b = New(Obj::Kind::kBool);
        b->i = op == 0x88;
        stack_.push_back(b);
        break;
      }
      case 'K':
      case 'M':
      case 'J': {
        const size_t k = op == 'K' ? 1 : op == 'M' ? 2 : 4;
        if (!Need(k)) return Err("truncated integer");
        uint64_t v = ReadLe(k);
        Obj* o = New(Obj::Kind::kInt);
        o->i = op == 'J' ? static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(v))) : static_cast<int64_t>(v);
        stack_.push_back(o);
        break;
      }
      case 0x8a: {  // LONG1
        if (!Need(1)) return Err("truncated LONG1");
        const size_t k = p_[pos_++];
        if (k > 8) return Err("integer wider than 64 bits");
        if (!Need(k)) return Err("truncated LONG1");
        uint64_t v = ReadLe(k);
        if (k > 0 && k < 8 && (v >> (8 * k - 1)) & 1) v |= ~0ull << (8 * k);  // sign-extend
        Obj* o = New(Obj::Kind::kInt);
        o->i = static_cast<int64_t>(v);
        stack_.push_back(o);
        break;
      }
      case 'G': {  // BINFLOAT, big-endian double
        if (!Need(8)) return Err("truncated BINFLOAT");
        uint64_t v = 0;
        for (int b = 0; b < 8; ++b) v = (v << 8) | p_[pos_ + b];
        pos_ += 8;
        Obj* o = New(Obj::Kind::kFloat);
        std::memcpy(&o->f, &v, 8);
        stack_.push_back(o);
        break;
      }
      case 'X':     // BINUNICODE
      case 0x8c:    // SHORT_BINUNICODE
      case 0x8d:    // BINUNICODE8
      case 'T':     // BINSTRING
      case 'U':     // SHORT_BINSTRING
      case 'B':     // BINBYTES
      case 'C':     // SHORT_BINBYTES
      case 0x8e: {  // BINBYTES8
        const size_t k = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
        if (!Need(k)) return Err("truncated string length");
        const uint64_t len = ReadLe(k);
        if (op == 'T' && len > 0x7FFFFFFF) return Err("negative BINSTRING length");
        if (len > n_ - pos_) return Err("string of " + std::to_string(len) + " bytes runs past the end");
        Obj* o = New((op == 'B' || op == 'C' || op == 0x8e) ? Obj::Kind::kBytes : Obj::Kind::kStr);
        o->s.assign(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        stack_.push_back(o);
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        LA_ASSIGN_OR_RETURN(std::string module, ReadLine());
        LA_ASSIGN_OR_RETURN(std::string name, ReadLine());
        LA_RETURN_IF_ERROR(PushGlobal(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        LA_ASSIGN_OR_RETURN(Obj * name, Pop());
        LA_ASSIGN_OR_RETURN(Obj * module, Pop());
        if (name->kind != Obj::Kind::kStr || module->kind != Obj::Kind::kStr) return Err("STACK_GLOBAL on non-strings");
        LA_RETURN_IF_ERROR(PushGlobal(module->s, name->s));
        break;
      }
      case ')':
        stack_.push_back(New(Obj::Kind::kTuple));
        break;
      case ']':
        stack_.push_back(New(Obj::Kind::kList));
        break;
      case '}':
        stack_.push_back(New(Obj::Kind::kDict));
        break;
      case 't':
      case 'l':
      case 'd': {
        LA_ASSIGN_OR_RETURN(std::vector<Obj*> items, PopMark());
        if (op == 'd') {
          if (items.size() % 2 != 0) return Err("DICT with an odd number of items");
          Obj* d = New(Obj::Kind::kDict);
          for (size_t k = 0; k < items.size(); k += 2) d->dict.emplace_back(items[k], items[k + 1]);
          stack_.push_back(d);
        } else {
          Obj* o = New(op == 't' ? Obj::Kind::kTuple : Obj::Kind::kList);
          o->items = std::move(items);
          stack_.push_back(o);
        }
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t k = op - 0x84;
        Obj* o = New(Obj::Kind::kTuple);
        o->items.resize(k);
        for (size_t j = k; j-- > 0;) {
          LA_ASSIGN_OR_RETURN(o->items[j], Pop());
        }
        stack_.push_back(o);
        break;
      }
      case 'q':
      case 'r': {  // BINPUT / LONG_BINPUT
        const size_t k = op == 'q' ? 1 : 4;
        if (!Need(k)) return Err("truncated PUT");
        const uint64_t idx = ReadLe(k);
        if (stack_.empty()) return Err("PUT on an empty stack");
        memo_[idx] = stack_.back();
        break;
      }
      case 0x94:  // MEMOIZE
        if (stack_.empty()) return Err("MEMOIZE on an empty stack");
        memo_[memo_.size()] = stack_.back();
        break;
      case 'h':
      case 'j': {  // BINGET / LONG_BINGET
        const size_t k = op == 'h' ? 1 : 4;
        if (!Need(k)) return Err("truncated GET");
        const uint64_t idx = ReadLe(k);
        auto it = memo_.find(idx);
        if (it == memo_.end()) return Err("GET of unknown memo entry " + std::to_string(idx));
        stack_.push_back(it->second);
        break;
      }
      case '0': {
        LA_ASSIGN_OR_RETURN(Obj * unused, Pop());
        (void)unused;
        break;
      }
      case '1': {
        LA_ASSIGN_OR_RETURN(std::vector<Obj*> unused, PopMark());
        (void)unused;
        break;
      }
      case '2':
        if (stack_.empty()) return Err("DUP on an empty stack");
        stack_.push_back(stack_.back());
        break;
      case 'a': {  // APPEND
        LA_ASSIGN_OR_RETURN(Obj * v, Pop());
        if (stack_.empty() || stack_.back()->kind != Obj::Kind::kList) return Err("APPEND to a non-list");
        stack_.back()->items.push_back(v);
        break;
      }
      case 'e': {  // APPENDS
        LA_ASSIGN_OR_RETURN(std::vector<Obj*> items, PopMark());
        if (stack_.empty() || stack_.back()->kind != Obj::Kind::kList) return Err("APPENDS to a non-list");
        auto& dst = stack_.back()->items;
        dst.insert(dst.end(), items.begin(), items.end());
        break;
      }
      case 's': {  // SETITEM
        LA_ASSIGN_OR_RETURN(Obj * v, Pop());
        LA_ASSIGN_OR_RETURN(Obj * k, Pop());
        if (stack_.empty() || stack_.back()->kind != Obj::Kind::kDict) return Err("SETITEM on a non-dict");
        stack_.back()->dict.emplace_back(k, v);
        break;
      }
      case 'u': {  // SETITEMS
        LA_ASSIGN_OR_RETURN(std::vector<Obj*> items, PopMark());
        if (items.size() % 2 != 0) return Err("SETITEMS with an odd number of items");
        if (stack_.empty() || stack_.back()->kind != Obj::Kind::kDict) return Err("SETITEMS on a non-dict");
        for (size_t k = 0; k < items.size(); k += 2) stack_.back()->dict.emplace_back(items[k], items[k + 1]);
        break;
      }
      case 'R': {  // REDUCE
        LA_ASSIGN_OR_RETURN(Obj * args, Pop());
        LA_ASSIGN_OR_RETURN(Obj * callable, Pop());
        LA_RETURN_IF_ERROR(Reduce(callable, args));
        break;
      }
      case 'b': {  // BUILD: state-dict attributes (OrderedDict._metadata, tensor state) are dropped
        LA_ASSIGN_OR_RETURN(Obj * state, Pop());
        (void)state;
        if (stack_.empty()) return Err("BUILD on an empty stack");
        const Obj::Kind k = stack_.back()->kind;
        if (k != Obj::Kind::kDict && k != Obj::Kind::kTensor) {
          return Err(std::string("BUILD on a ") + KindName(k) + " (only dicts and tensors carry state)");
        }
        break;
      }
      case 'Q': {  // BINPERSID
        LA_ASSIGN_OR_RETURN(Obj * pid, Pop());
        LA_ASSIGN_OR_RETURN(Obj * storage, MakeStorage(pid));
        stack_.push_back(storage);
        break;
      }
      default: {
        static const char kHex[] = "0123456789abcdef";
        std::string code = "0x";
        code.push_back(kHex[op >> 4]);
        code.push_back(kHex[op & 15]);
        return Status::NotSupported(origin_ + ": data.pkl offset " + std::to_string(op_pos_) + ": pickle opcode " +
                                    code +
                                    " is not allowed in a state dict (objects, extensions and text protocols are "
                                    "refused; nothing is executed)");
      }
    }
  }
}

void Collect(const Obj* dict, std::vector<PickledTensor>* out) {
  for (const auto& [k, v] : dict->dict) {
    if (k->kind == Obj::Kind::kStr && v->kind == Obj::Kind::kTensor) {
      PickledTensor t = v->tensor;
      t.name = k->s;
      out->push_back(std::move(t));
    }
  }
}

}  // namespace

const char* StorageClassName(DType d) {
  for (const auto& c : kStorageClasses) {
    if (c.dtype == d) return c.name;
  }
  return nullptr;
}

StatusOr<PickledStateDict> ParsePickleStateDict(const uint8_t* data, size_t size, const std::string& origin) {
  Unpickler u(data, size, origin);
  LA_ASSIGN_OR_RETURN(Obj * top, u.Run());
  if (top->kind != Obj::Kind::kDict) {
    return Status::NotSupported(origin + ": data.pkl holds a " + std::string(KindName(top->kind)) +
                                ", not a state dict");
  }
  PickledStateDict sd;
  Collect(top, &sd.tensors);
  if (sd.tensors.empty()) {
    for (const char* nested : {"state_dict", "model", "module"}) {
      for (const auto& [k, v] : top->dict) {
        if (sd.tensors.empty() && k->kind == Obj::Kind::kStr && k->s == nested && v->kind == Obj::Kind::kDict) {
          Collect(v, &sd.tensors);
          if (!sd.tensors.empty()) sd.nested_under = nested;
        }
      }
    }
  }
  std::map<std::string, int> seen;
  for (const auto& t : sd.tensors) {
    if (++seen[t.name] > 1) return Status::Corruption(origin + ": data.pkl names tensor '" + t.name + "' twice");
  }
  return sd;
}

namespace {

void PutGlobal(std::string& s, const char* module, const char* name) {
  s.push_back('c');
  s += module;
  s.push_back('\n');
  s += name;
  s.push_back('\n');
}
void PutStr(std::string& s, const std::string& v) {
  s.push_back('X');
  const uint32_t n = static_cast<uint32_t>(v.size());
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  s += v;
}
void PutInt(std::string& s, int64_t v) {
  if (v >= 0 && v < 256) {
    s.push_back('K');
    s.push_back(static_cast<char>(v));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    s.push_back('J');
    const uint32_t u = static_cast<uint32_t>(static_cast<int32_t>(v));
    for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
  } else {
    s.push_back(static_cast<char>(0x8a));
    s.push_back(8);
    const uint64_t u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
  }
}
void PutIntTuple(std::string& s, const std::vector<int64_t>& v) {
  if (v.empty()) {
    s.push_back(')');
    return;
  }
  s.push_back('(');
  for (int64_t x : v) PutInt(s, x);
  s.push_back('t');
}

}  // namespace

StatusOr<std::string> PickleStateDict(const std::vector<PickledTensor>& tensors) {
  std::string s;
  s += "\x80\x02";
  PutGlobal(s, "collections", "OrderedDict");
  s += ")R";
  if (!tensors.empty()) {
    s.push_back('(');
    for (const PickledTensor& t : tensors) {
      const char* storage = StorageClassName(t.dtype);
      if (storage == nullptr) {
        return Status::NotSupported(std::string("tensor '") + t.name + "': dtype " + DTypeName(t.dtype) +
                                    " has no torch storage class");
      }
      PutStr(s, t.name);
      PutGlobal(s, "torch._utils", "_rebuild_tensor_v2");
      s.push_back('(');
      // Storage: persistent id tuple.
      s.push_back('(');
      PutStr(s, "storage");
      PutGlobal(s, "torch", storage);
      PutStr(s, t.storage_key);
      PutStr(s, "cpu");
      PutInt(s, static_cast<int64_t>(t.storage_numel));
      s += "tQ";
      PutInt(s, t.storage_offset);
      PutIntTuple(s, t.size);
      PutIntTuple(s, t.stride);
      s.push_back(static_cast<char>(0x89));  // requires_grad = False
      PutGlobal(s, "collections", "OrderedDict");
      s += ")R";  // backward_hooks = OrderedDict()
      s += "tR";
    }
    s.push_back('u');
  }
  s.push_back('.');
  return s;
}

}  // namespace liveavatar::io::internal
