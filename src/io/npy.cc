// .npy reader/writer: a small strict parser for the header's Python dict literal.
#include "qkit/io/npy.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "internal/check.h"
#include "internal/half.h"

namespace qkit {
namespace {

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  bool has_descr = false, has_order = false, has_shape = false;
};

// Recursive-descent parser over the header text. Every accessor checks bounds.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& source) : s_(text), src_(source) {}

  Header Parse() {
    Header h;
    Skip();
    Expect('{');
    while (true) {
      Skip();
      if (Peek() == '}') {
        ++i_;
        break;
      }
      const std::string key = ParseString();
      Skip();
      Expect(':');
      Skip();
      if (key == "descr") {
        h.descr = ParseString();
        h.has_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = ParseBool();
        h.has_order = true;
      } else if (key == "shape") {
        h.shape = ParseShape();
        h.has_shape = true;
      } else {
        Fail("unknown header key '" + key + "'");
      }
      Skip();
      if (Peek() == ',') {
        ++i_;
        continue;
      }
      Skip();
      Expect('}');
      break;
    }
    Skip();
    QKIT_REQUIRE(i_ == s_.size(), DataLoss,
                 src_ << ": .npy header has unexpected text after the dictionary");
    QKIT_REQUIRE(h.has_descr && h.has_order && h.has_shape, DataLoss,
                 src_ << ": .npy header lacks " << (!h.has_descr ? "'descr'"
                                                    : !h.has_order ? "'fortran_order'"
                                                                   : "'shape'"));
    return h;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    QKIT_FAIL(DataLoss, src_ << ": malformed .npy header: " << what << " at offset " << i_);
  }
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void Skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  void Expect(char c) {
    if (Peek() != c) Fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string ParseString() {
    const char q = Peek();
    if (q != '\'' && q != '"') Fail("expected a quoted string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) {
      if (out.size() > 64) Fail("string too long");
      out += s_[i_++];
    }
    if (i_ >= s_.size()) Fail("unterminated string");
    ++i_;
    return out;
  }
  bool ParseBool() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    Fail("expected True or False");
  }
  std::vector<int64_t> ParseShape() {
    std::vector<int64_t> shape;
    Expect('(');
    while (true) {
      Skip();
      if (Peek() == ')') {
        ++i_;
        return shape;
      }
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) Fail("expected a dimension");
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(Peek()))) {
        v = v * 10 + (s_[i_++] - '0');
        if (v > kNpyMaxElements) Fail("dimension too large");
      }
      // numpy writes 'L' suffixes in Python-2 era files.
      if (Peek() == 'L') ++i_;
      shape.push_back(v);
      if (shape.size() > static_cast<size_t>(kMaxDims)) {
        QKIT_FAIL(InvalidArgument, src_ << ": .npy array has more than " << kMaxDims
                                        << " dims (qkit supports at most " << kMaxDims << ")");
      }
      Skip();
      if (Peek() == ',') {
        ++i_;
        continue;
      }
      Skip();
      Expect(')');
      return shape;
    }
  }

  const std::string& s_;
  const std::string& src_;
  size_t i_ = 0;
};

struct DescrInfo {
  DType dtype;
  size_t file_itemsize;
  bool from_f64 = false;
};

DescrInfo Describe(const std::string& descr, const std::string& src) {
  if (descr == "<f4") return {DType::kFloat32, 4};
  if (descr == "<f2") return {DType::kFloat16, 2};
  if (descr == "<f8") return {DType::kFloat32, 8, true};
  if (descr == "|i1" || descr == "<i1") return {DType::kInt8, 1};
  if (descr == "|u1" || descr == "<u1" || descr == "|b1") return {DType::kUInt8, 1};
  if (descr == "<i2") return {DType::kInt16, 2};
  if (descr == "<i4") return {DType::kInt32, 4};
  if (!descr.empty() && descr[0] == '>') {
    QKIT_FAIL(InvalidArgument, src << ": big-endian .npy data ('" << descr
                                   << "') is not supported; save it little-endian");
  }
  QKIT_FAIL(InvalidArgument,
            src << ": unsupported .npy dtype '" << descr
                << "' (supported: <f4, <f2, <f8, |i1, |u1, |b1, <i2, <i4)");
}

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TensorView NpyArray::View() {
  return TensorView::Contiguous(data.data(), dtype, static_cast<int>(shape.size()),
                                shape.data());
}

NpyArray ParseNpy(const uint8_t* bytes, size_t size, const std::string& source) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  QKIT_REQUIRE(bytes != nullptr || size == 0, InvalidArgument, source << ": null buffer");
  QKIT_REQUIRE(size >= 10 && std::memcmp(bytes, kMagic, 6) == 0, DataLoss,
               source << ": not a .npy file (bad magic or shorter than 10 bytes)");
  const uint8_t major = bytes[6];
  QKIT_REQUIRE(major >= 1 && major <= 3, DataLoss,
               source << ": unsupported .npy format version " << int{major} << "."
                      << int{bytes[7]});
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<size_t>(bytes[8]) | (static_cast<size_t>(bytes[9]) << 8);
    offset = 10;
  } else {
    QKIT_REQUIRE(size >= 12, DataLoss, source << ": .npy header truncated");
    header_len = static_cast<size_t>(bytes[8]) | (static_cast<size_t>(bytes[9]) << 8) |
                 (static_cast<size_t>(bytes[10]) << 16) | (static_cast<size_t>(bytes[11]) << 24);
    offset = 12;
  }
  QKIT_REQUIRE(header_len <= size - offset, DataLoss,
               source << ": .npy header length " << header_len << " exceeds the file ("
                      << size << " bytes)");
  QKIT_REQUIRE(header_len <= (size_t{1} << 20), DataLoss,
               source << ": .npy header length " << header_len << " is absurd");
  const std::string text(reinterpret_cast<const char*>(bytes + offset), header_len);
  const Header h = HeaderParser(text, source).Parse();
  const DescrInfo info = Describe(h.descr, source);

  int64_t numel = 1;
  for (int64_t d : h.shape) {
    QKIT_REQUIRE(d == 0 || numel <= kNpyMaxElements / d, InvalidArgument,
                 source << ": .npy shape has more than " << kNpyMaxElements << " elements");
    numel *= d;
  }
  const size_t payload = size - offset - header_len;
  const uint64_t need = static_cast<uint64_t>(numel) * info.file_itemsize;
  QKIT_REQUIRE(payload >= need, DataLoss,
               source << ": .npy data truncated: shape needs " << need << " bytes, file has "
                      << payload);
  QKIT_REQUIRE(payload == need, DataLoss,
               source << ": .npy file has " << (payload - need)
                      << " unexpected bytes after the data");

  NpyArray a;
  a.dtype = info.dtype;
  a.shape = h.shape;
  const size_t out_item = DTypeSize(info.dtype);
  a.data.resize(static_cast<size_t>(numel) * out_item);
  const uint8_t* src = bytes + offset + header_len;

  // Element i of the output (row-major) comes from file element j (row-major, or column-major
  // for Fortran order).
  const int nd = static_cast<int>(h.shape.size());
  std::vector<int64_t> coord(static_cast<size_t>(nd), 0);
  std::vector<int64_t> fstride(static_cast<size_t>(nd), 1);
  for (int d = 1; d < nd; ++d) fstride[d] = fstride[d - 1] * h.shape[d - 1];
  for (int64_t i = 0; i < numel; ++i) {
    int64_t j = i;
    if (h.fortran_order && nd > 1) {
      j = 0;
      for (int d = 0; d < nd; ++d) j += coord[d] * fstride[d];
      for (int d = nd - 1; d >= 0; --d) {
        if (++coord[d] < h.shape[d]) break;
        coord[d] = 0;
      }
    }
    const uint8_t* e = src + static_cast<size_t>(j) * info.file_itemsize;
    uint8_t* o = a.data.data() + static_cast<size_t>(i) * out_item;
    if (info.from_f64) {
      double v;
      std::memcpy(&v, e, 8);
      const float f = static_cast<float>(v);
      std::memcpy(o, &f, 4);
    } else {
      std::memcpy(o, e, out_item);
    }
  }
  return a;
}

NpyArray ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QKIT_REQUIRE(in, InvalidArgument, path << ": cannot open for reading");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  QKIT_REQUIRE(size >= 0, InvalidArgument, path << ": cannot determine the file size");
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), size);
  QKIT_REQUIRE(in.good() || size == 0, InvalidArgument, path << ": read failed");
  return ParseNpy(bytes.data(), bytes.size(), path);
}

void WriteNpy(const std::string& path, const TensorView& view) {
  QKIT_REQUIRE(view.IsContiguous(), InvalidArgument,
               "qkit::WriteNpy: `view` must be contiguous (shape " << view.ShapeString() << ")");
  const char* descr = nullptr;
  switch (view.dtype) {
    case DType::kFloat32: descr = "<f4"; break;
    case DType::kFloat16: descr = "<f2"; break;
    case DType::kInt8: descr = "|i1"; break;
    case DType::kUInt8: descr = "|u1"; break;
    case DType::kInt16: descr = "<i2"; break;
    case DType::kInt32: descr = "<i4"; break;
    case DType::kBFloat16:
      QKIT_FAIL(InvalidArgument, "qkit::WriteNpy: .npy has no bfloat16 dtype");
  }
  std::ostringstream dict;
  dict << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  for (int d = 0; d < view.ndim; ++d) dict << view.shape[d] << (view.ndim == 1 ? "," : d + 1 < view.ndim ? ", " : "");
  dict << "), }";
  std::string header = dict.str();
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    QKIT_REQUIRE(out, InvalidArgument, path << ": cannot open for writing");
    const uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                             static_cast<uint8_t>(header.size() & 0xFF),
                             static_cast<uint8_t>(header.size() >> 8)};
    out.write(reinterpret_cast<const char*>(pre), 10);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(view.data),
              static_cast<std::streamsize>(view.numel() * DTypeSize(view.dtype)));
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      QKIT_FAIL(InvalidArgument, path << ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    QKIT_FAIL(InvalidArgument, path << ": cannot rename the finished file into place");
  }
}

}  // namespace qkit
